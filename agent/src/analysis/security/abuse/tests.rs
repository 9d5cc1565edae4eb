#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use serde::Deserialize;

use super::*;

const SEC: u64 = 1000;
/// A start time far from 0, as real Unix ms are.
const T0: u64 = 1_700_000_000_000;

fn call<'a>(
    now_ms: u64,
    principal: &'a str,
    object_ids: &'a [u64],
    status: u16,
) -> Observation<'a> {
    Observation {
        now_ms,
        service: "orders-api",
        endpoint: "GET /orders/{id}",
        principal,
        source: "10.0.0.7",
        login_user: None,
        credential: None,
        object_ids,
        status,
        response_bytes: 1000,
        response_sensitive: 0,
    }
}

/// Feeds `calls` and returns the detections.
fn run<'a>(
    det: &mut dyn AbuseDetector,
    calls: impl IntoIterator<Item = Observation<'a>>,
) -> Vec<Detection> {
    calls
        .into_iter()
        .filter_map(|obs| det.observe(&obs))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// BOLA

fn bola() -> BolaDetector {
    BolaDetector::new(&BolaParams::default())
}

#[test]
fn bola_own_objects_read_repeatedly_do_not_fire() {
    let mut det = bola();
    let ids = [[101], [102], [103]];
    // Alice reads her 3 orders ten times a second for ten minutes.
    let found = run(
        &mut det,
        (0..6000u64).map(|i| call(T0 + i * 100, "jwt:sub=alice", &ids[(i % 3) as usize], 200)),
    );
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn bola_enumeration_fires_once_at_the_threshold() {
    let mut det = bola();
    let ids: Vec<[u64; 1]> = (1..=50).map(|id| [id]).collect();
    let mut found = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        // Most ids are someone else's (404), some exist (200).
        let status = if i % 3 == 0 { 200 } else { 404 };
        if let Some(d) = det.observe(&call(T0 + i as u64 * 500, "jwt:sub=mallory", id, status)) {
            found.push((i, d));
        }
    }
    assert_eq!(found.len(), 1, "{found:?}");
    let (at, d) = &found[0];
    assert_eq!(*at, 20, "fires at the 21st distinct id");
    assert_eq!(d.key, "jwt:sub=mallory");
    assert_eq!(
        d.evidence,
        "21 distinct object ids in 60 s (threshold 20, no baseline yet)"
    );
}

#[test]
fn bola_fires_once_per_window_then_rearms() {
    let mut det = bola();
    let ids: Vec<[u64; 1]> = (0..180).map(|id| [id]).collect();
    // One new id a second for three minutes.
    let times: Vec<u64> = (0..180u64)
        .filter(|&i| {
            det.observe(&call(
                T0 + i * SEC,
                "jwt:sub=mallory",
                &ids[i as usize],
                404,
            ))
            .is_some()
        })
        .collect();
    assert_eq!(times, [20, 80, 140]);
}

#[test]
fn bola_ignores_denied_and_failed_responses_and_calls_without_ids() {
    let mut det = bola();
    let ids: Vec<[u64; 1]> = (0..100).map(|id| [id]).collect();
    for status in [401, 403, 500, 0, 302] {
        let found = run(
            &mut det,
            ids.iter().map(|id| call(T0, "jwt:sub=mallory", id, status)),
        );
        assert!(found.is_empty(), "status {status}");
    }
    assert!(
        run(
            &mut det,
            (0..100).map(|_| call(T0, "jwt:sub=mallory", &[], 200))
        )
        .is_empty()
    );
    assert_eq!(det.tracked_keys(), 0);
}

#[test]
fn bola_counts_per_principal_and_endpoint() {
    let mut det = bola();
    let ids: Vec<[u64; 1]> = (0..15).map(|id| [id]).collect();
    let mut found = Vec::new();
    for id in &ids {
        found.extend(det.observe(&call(T0, "jwt:sub=alice", id, 200)));
        found.extend(det.observe(&call(T0, "jwt:sub=bob", id, 200)));
        found.extend(det.observe(&Observation {
            endpoint: "GET /invoices/{id}",
            ..call(T0, "jwt:sub=alice", id, 200)
        }));
    }
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(det.tracked_keys(), 3);
}

#[test]
fn bola_several_ids_in_one_call() {
    let mut det = bola();
    let pairs: Vec<[u64; 2]> = (0..11u64).map(|i| [2 * i, 2 * i + 1]).collect();
    let found = run(
        &mut det,
        pairs.iter().map(|p| call(T0, "jwt:sub=mallory", p, 200)),
    );
    assert_eq!(found.len(), 1);
    // The set is capped one past the threshold: enough to know it is exceeded.
    assert!(
        found[0].evidence.starts_with("21 distinct object ids"),
        "{}",
        found[0].evidence
    );
}

/// A principal that reads 15 distinct objects in every window (above a third of the floor)
/// learns a baseline of 15, so its threshold becomes 45.
fn bola_with_baseline_15() -> BolaDetector {
    let mut det = bola();
    let ids: Vec<[u64; 1]> = (0..15).map(|id| [id]).collect();
    for window in 0..10u64 {
        for (i, id) in ids.iter().enumerate() {
            assert!(
                det.observe(&call(
                    T0 + window * 60 * SEC + i as u64 * SEC,
                    "jwt:sub=batch",
                    id,
                    200
                ))
                .is_none()
            );
        }
    }
    det
}

#[test]
fn bola_baseline_raises_the_threshold() {
    let mut det = bola_with_baseline_15();
    let start = T0 + 10 * 60 * SEC;
    let ids: Vec<[u64; 1]> = (0..60).map(|id| [id]).collect();
    // 30 distinct ids, above the floor of 20 but not above 3 × 15: normal for this principal.
    let found = run(
        &mut det,
        ids[..30]
            .iter()
            .map(|id| call(start, "jwt:sub=batch", id, 200)),
    );
    assert!(found.is_empty(), "{found:?}");
    let found = run(
        &mut det,
        ids.iter()
            .map(|id| call(start + SEC, "jwt:sub=batch", id, 200)),
    );
    assert_eq!(found.len(), 1);
    assert!(
        found[0]
            .evidence
            .starts_with("46 distinct object ids in 60 s (threshold 45, baseline 15."),
        "{}",
        found[0].evidence
    );
    // A fresh principal has only the floor.
    let found = run(
        &mut det,
        ids[..30]
            .iter()
            .map(|id| call(start, "jwt:sub=new", id, 200)),
    );
    assert_eq!(found.len(), 1);
}

#[test]
fn bola_attack_windows_do_not_teach_the_baseline() {
    let mut det = bola();
    let ids: Vec<[u64; 1]> = (0..100_000).map(|id| [id]).collect();
    let mut found = Vec::new();
    // Five windows of enumeration, 100 new ids each.
    for (i, id) in ids[..500].iter().enumerate() {
        let now = T0 + (i as u64 / 100) * 60 * SEC + (i as u64 % 100) * 100;
        found.extend(det.observe(&call(now, "jwt:sub=mallory", id, 404)));
    }
    assert_eq!(found.len(), 5);
    assert!(found.iter().all(|d| d.evidence == "21 distinct object ids in 60 s (threshold 20, no baseline yet)"));
}

// ---------------------------------------------------------------------------------------------
// Authentication failures, credential stuffing, token spread

#[test]
fn auth_failures_burst_fires_and_few_do_not() {
    let mut det = AuthFailureDetector::new(&AuthFailureParams::default());
    let found = run(
        &mut det,
        (0..25u64).map(|i| call(T0 + i * 2 * SEC, "jwt:sub=alice", &[], 401)),
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "jwt:sub=alice");
    assert_eq!(
        found[0].evidence,
        "20 authentication failures (401/403) in 60 s (threshold 20)"
    );
    let found = run(
        &mut det,
        (0..5u64).map(|i| call(T0 + i * SEC, "jwt:sub=bob", &[], 403)),
    );
    assert!(found.is_empty());
}

#[test]
fn auth_failures_only_count_401_and_403() {
    let mut det = AuthFailureDetector::new(&AuthFailureParams::default());
    let statuses = [200, 404, 500, 429, 0];
    let found = run(
        &mut det,
        (0..100u64).map(|i| call(T0 + i, "jwt:sub=alice", &[], statuses[i as usize % 5])),
    );
    assert!(found.is_empty());
    // Successes in between do not hide failures.
    let found = run(
        &mut det,
        (0..40u64).map(|i| {
            call(
                T0 + i * 100,
                "jwt:sub=alice",
                &[],
                if i % 2 == 0 { 401 } else { 200 },
            )
        }),
    );
    assert_eq!(found.len(), 1);
}

#[test]
fn auth_failures_spread_out_do_not_fire() {
    let mut det = AuthFailureDetector::new(&AuthFailureParams::default());
    // One failure every 10 s for an hour: 6 a minute.
    let found = run(
        &mut det,
        (0..360u64).map(|i| call(T0 + i * 10 * SEC, "jwt:sub=alice", &[], 401)),
    );
    assert!(found.is_empty());
}

#[test]
fn auth_failures_per_source() {
    let params = AuthFailureParams {
        per: AuthFailureScope::Source,
        ..AuthFailureParams::default()
    };
    let mut per_source = AuthFailureDetector::new(&params);
    let mut per_principal = AuthFailureDetector::new(&AuthFailureParams::default());
    let principals: Vec<String> = (0..25).map(|i| format!("basic:user{i}")).collect();
    let calls: Vec<Observation> = principals.iter().map(|p| call(T0, p, &[], 401)).collect();
    let found = run(&mut per_source, calls.iter().copied());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "source 10.0.0.7");
    assert!(run(&mut per_principal, calls.iter().copied()).is_empty());
}

#[test]
fn auth_failures_rearm_after_a_window() {
    let mut det = AuthFailureDetector::new(&AuthFailureParams::default());
    // Two failures a second for three minutes.
    let times: Vec<u64> = (0..360u64)
        .filter(|&i| {
            det.observe(&call(T0 + i * 500, "jwt:sub=alice", &[], 401))
                .is_some()
        })
        .map(|i| i * 500 / SEC)
        .collect();
    assert_eq!(times.len(), 3, "{times:?}");
    assert!(times.windows(2).all(|w| w[1] - w[0] >= 60), "{times:?}");
}

fn login<'a>(now_ms: u64, source: &'a str, user: u64) -> Observation<'a> {
    Observation {
        source,
        login_user: Some(user),
        endpoint: "POST /login",
        ..call(now_ms, "ip:client", &[], 401)
    }
}

#[test]
fn credential_stuffing_fires_on_many_users_from_one_source() {
    let mut det = CredentialStuffingDetector::new(&CredentialStuffingParams::default());
    let found = run(
        &mut det,
        (0..30u64).map(|u| login(T0 + u * 5 * SEC, "203.0.113.9", u)),
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "source 203.0.113.9");
    assert_eq!(
        found[0].evidence,
        "10 distinct login user names from one source in 300 s (threshold 10)"
    );
}

#[test]
fn credential_stuffing_ignores_one_user_retrying_and_many_sources() {
    let mut det = CredentialStuffingDetector::new(&CredentialStuffingParams::default());
    // One user mistyping its password fifty times.
    assert!(
        run(
            &mut det,
            (0..50u64).map(|i| login(T0 + i * SEC, "203.0.113.9", 7))
        )
        .is_empty()
    );
    // Ten users logging in, each from its own address.
    let sources: Vec<String> = (0..10).map(|i| format!("10.1.0.{i}")).collect();
    assert!(
        run(
            &mut det,
            sources
                .iter()
                .enumerate()
                .map(|(u, s)| login(T0, s, u as u64))
        )
        .is_empty()
    );
    // Calls without a login user name are not counted.
    assert!(run(&mut det, (0..50u64).map(|i| call(T0 + i, "ip:x", &[], 401))).is_empty());
}

fn with_token<'a>(now_ms: u64, source: &'a str, credential: u64) -> Observation<'a> {
    Observation {
        source,
        credential: Some(credential),
        ..call(now_ms, "key:3fa9", &[], 200)
    }
}

#[test]
fn token_spread_fires_on_one_credential_from_many_sources() {
    let mut det = TokenSpreadDetector::new(&TokenSpreadParams::default());
    let sources: Vec<String> = (0..8).map(|i| format!("198.51.100.{i}")).collect();
    let found = run(
        &mut det,
        sources
            .iter()
            .enumerate()
            .map(|(i, s)| with_token(T0 + i as u64 * SEC, s, 42)),
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "key:3fa9");
    assert_eq!(
        found[0].evidence,
        "one credential presented from 5 distinct sources in 300 s (threshold 5)"
    );
}

#[test]
fn token_spread_ignores_few_sources_and_distinct_credentials() {
    let mut det = TokenSpreadDetector::new(&TokenSpreadParams::default());
    // A client and its failover address, all day.
    let found = run(
        &mut det,
        (0..10_000u64).map(|i| {
            with_token(
                T0 + i * 10 * SEC,
                if i % 2 == 0 { "10.0.0.1" } else { "10.0.0.2" },
                42,
            )
        }),
    );
    assert!(found.is_empty());
    // Five clients, five tokens.
    let sources: Vec<String> = (0..5).map(|i| format!("198.51.100.{i}")).collect();
    assert!(
        run(
            &mut det,
            sources
                .iter()
                .enumerate()
                .map(|(i, s)| with_token(T0, s, 100 + i as u64))
        )
        .is_empty()
    );
    // A call without credential is not counted.
    assert!(run(&mut det, (0..100u64).map(|_| call(T0, "ip:x", &[], 200))).is_empty());
}

#[test]
fn token_spread_forgets_sources_after_the_window() {
    let mut det = TokenSpreadDetector::new(&TokenSpreadParams::default());
    let sources: Vec<String> = (0..20).map(|i| format!("198.51.100.{i}")).collect();
    // A new source every 2 minutes (a mobile client roaming): at most 3 in any 5 minutes.
    let found = run(
        &mut det,
        sources
            .iter()
            .enumerate()
            .map(|(i, s)| with_token(T0 + i as u64 * 120 * SEC, s, 42)),
    );
    assert!(found.is_empty(), "{found:?}");
}

// ---------------------------------------------------------------------------------------------
// Rate

/// `per_sec` calls a second from `start` for `secs` seconds, evenly spread.
fn steady(start: u64, secs: u64, per_sec: u64) -> impl Iterator<Item = u64> {
    (0..secs * per_sec).map(move |i| start + i * SEC / per_sec)
}

/// A principal calling 5 times a second (50 per 10 s window) for five minutes.
fn rate_with_baseline_50() -> RateDetector {
    let mut det = RateDetector::new(&RateParams::default());
    let found = run(
        &mut det,
        steady(T0, 300, 5).map(|t| call(t, "jwt:sub=svc", &[], 200)),
    );
    assert!(found.is_empty(), "{found:?}");
    det
}

#[test]
fn rate_steady_traffic_does_not_fire_and_ten_times_does() {
    let mut det = rate_with_baseline_50();
    let start = T0 + 300 * SEC;
    // Ten times the baseline.
    let found = run(
        &mut det,
        steady(start, 10, 50).map(|t| call(t, "jwt:sub=svc", &[], 200)),
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "jwt:sub=svc");
    assert!(
        found[0]
            .evidence
            .starts_with("251 requests in 10 s (threshold 250, baseline 5"),
        "{}",
        found[0].evidence
    );
    // Back to normal once the flood left the window, then twice as busy: above no threshold
    // (max(100, 5 × 50) = 250).
    let start = start + 20 * SEC;
    assert!(
        run(
            &mut det,
            steady(start, 60, 5).map(|t| call(t, "jwt:sub=svc", &[], 200))
        )
        .is_empty()
    );
    assert!(
        run(
            &mut det,
            steady(start + 60 * SEC, 60, 10).map(|t| call(t, "jwt:sub=svc", &[], 200))
        )
        .is_empty()
    );
}

#[test]
fn rate_without_baseline_uses_the_floor() {
    let mut det = RateDetector::new(&RateParams::default());
    let found = run(
        &mut det,
        (0..150u64).map(|i| call(T0 + i * 10, "jwt:sub=new", &[], 200)),
    );
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].evidence,
        "101 requests in 10 s (threshold 100, no baseline yet)"
    );
}

#[test]
fn rate_flood_does_not_teach_the_baseline() {
    let mut det = rate_with_baseline_50();
    // A minute at 100 a second: once per window, always against the old baseline.
    let found = run(
        &mut det,
        steady(T0 + 300 * SEC, 60, 100).map(|t| call(t, "jwt:sub=svc", &[], 200)),
    );
    assert_eq!(found.len(), 6, "{found:?}");
    assert!(
        found
            .iter()
            .all(|d| d.evidence.contains("(threshold 250, baseline 5")),
        "{found:?}"
    );
}

#[test]
fn rate_per_endpoint_flood_needs_many_sources() {
    let params = RateParams {
        per: RateScope::Endpoint,
        distinct_sources: Some(10),
        ..RateParams::default()
    };
    params.validate().unwrap();
    let mut det = RateDetector::new(&params);
    // 1000 requests in 5 s from one client: not a spread flood.
    assert!(
        run(
            &mut det,
            (0..1000u64).map(|i| call(T0 + i * 5, "ip:10.0.0.7", &[], 200))
        )
        .is_empty()
    );
    // 1000 requests from 50 clients.
    let sources: Vec<String> = (0..50).map(|i| format!("192.0.2.{i}")).collect();
    let start = T0 + 60 * SEC;
    let found = run(
        &mut det,
        (0..1000u64).map(|i| Observation {
            source: &sources[i as usize % 50],
            ..call(start + i * 5, "ip:any", &[], 200)
        }),
    );
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "orders-api GET /orders/{id}");
    assert!(
        found[0]
            .evidence
            .ends_with("(threshold 100, no baseline yet) from at least 10 distinct sources"),
        "{}",
        found[0].evidence
    );
}

#[test]
fn rate_per_endpoint_counts_every_caller() {
    let params = RateParams {
        per: RateScope::Endpoint,
        ..RateParams::default()
    };
    let mut det = RateDetector::new(&params);
    let principals: Vec<String> = (0..200).map(|i| format!("jwt:sub=u{i}")).collect();
    let found = run(&mut det, principals.iter().map(|p| call(T0, p, &[], 200)));
    assert_eq!(found.len(), 1);
    assert_eq!(det.tracked_keys(), 1);
}

// ---------------------------------------------------------------------------------------------
// Exposure

fn response<'a>(now_ms: u64, bytes: u64, sensitive: u32) -> Observation<'a> {
    Observation {
        response_bytes: bytes,
        response_sensitive: sensitive,
        ..call(now_ms, "jwt:sub=alice", &[], 200)
    }
}

#[test]
fn exposure_fires_on_oversized_responses_after_warmup() {
    let mut det = ExposureDetector::new(&ExposureParams::default());
    // During warmup nothing is judged.
    let found = run(
        &mut det,
        (0..10u64).map(|i| response(T0 + i, if i == 5 { 5_000_000 } else { 2000 }, 0)),
    );
    assert!(found.is_empty());
    let mut det = ExposureDetector::new(&ExposureParams::default());
    let sizes = [1500, 2500, 2000, 1800, 2200];
    assert!(
        run(
            &mut det,
            (0..100u64).map(|i| response(T0 + i, sizes[i as usize % 5], 1))
        )
        .is_empty()
    );
    let found = run(&mut det, [response(T0 + 200, 1_000_000, 0)]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key, "orders-api GET /orders/{id}");
    let evidence = &found[0].evidence;
    assert!(
        evidence.starts_with("response of 1000000 bytes, endpoint mean 2"),
        "{evidence}"
    );
    assert!(evidence.ends_with(" bytes (threshold 65536)"), "{evidence}");
}

#[test]
fn exposure_ignores_small_responses_and_normal_variation() {
    let mut det = ExposureDetector::new(&ExposureParams::default());
    assert!(run(&mut det, (0..100u64).map(|i| response(T0 + i, 1000, 0))).is_empty());
    // 50 times the mean, but below min_bytes.
    assert!(run(&mut det, [response(T0 + 200, 50_000, 0)]).is_empty());
    // An endpoint with large responses: 300 KB is normal, 2 MB is not yet 10 times.
    let big = |now, bytes| Observation {
        endpoint: "GET /export",
        ..response(now, bytes, 0)
    };
    assert!(run(&mut det, (0..100u64).map(|i| big(T0 + i, 300_000))).is_empty());
    assert!(run(&mut det, [big(T0 + 200, 2_000_000)]).is_empty());
    assert_eq!(run(&mut det, [big(T0 + 300, 3_500_000)]).len(), 1);
    // Calls without a response are not judged.
    assert!(
        run(
            &mut det,
            [Observation {
                status: 0,
                ..response(T0 + 400, 9_000_000, 90)
            }]
        )
        .is_empty()
    );
}

#[test]
fn exposure_fires_on_sensitive_heavy_responses() {
    let mut det = ExposureDetector::new(&ExposureParams::default());
    assert!(
        run(
            &mut det,
            (0..50u64).map(|i| response(T0 + i, 1000, (i % 3) as u32))
        )
        .is_empty()
    );
    assert!(run(&mut det, [response(T0 + 100, 1000, 4)]).is_empty());
    let found = run(&mut det, [response(T0 + 200, 1000, 40)]);
    assert_eq!(found.len(), 1);
    assert!(
        found[0]
            .evidence
            .starts_with("response with 40 sensitive-data findings, endpoint mean 1.0"),
        "{}",
        found[0].evidence
    );
}

#[test]
fn exposure_fires_once_a_minute_and_does_not_learn_the_dump() {
    let mut det = ExposureDetector::new(&ExposureParams::default());
    assert!(run(&mut det, (0..50u64).map(|i| response(T0 + i, 1000, 0))).is_empty());
    // A dump, one huge page a second for three minutes.
    let times: Vec<u64> = (0..180u64)
        .filter(|&i| {
            det.observe(&response(T0 + SEC + i * SEC, 10_000_000, 0))
                .is_some()
        })
        .collect();
    assert_eq!(times, [0, 60, 120]);
}

// ---------------------------------------------------------------------------------------------
// Bounds

#[test]
fn keys_stay_at_the_cap() {
    let mut bola = bola();
    let mut auth = AuthFailureDetector::new(&AuthFailureParams::default());
    let mut principal = String::new();
    for i in 0..1_000_000u64 {
        principal.clear();
        principal.push_str("jwt:sub=user");
        principal.push_str(&i.to_string());
        let obs = call(T0 + i, &principal, &[7], 200);
        assert!(bola.observe(&obs).is_none());
        assert!(auth.observe(&Observation { status: 401, ..obs }).is_none());
    }
    assert_eq!(bola.tracked_keys(), MAX_KEYS);
    assert_eq!(auth.tracked_keys(), MAX_KEYS);
    // The most recent keys are the ones kept: the last principal still counts.
    let last = call(T0 + 1_000_000, &principal, &[], 401);
    assert!(run(&mut auth, (0..18).map(|_| last)).is_empty());
    assert_eq!(run(&mut auth, [last]).len(), 1);
}

#[test]
fn stored_values_stay_within_the_budget() {
    let params = BolaParams {
        distinct_ids: 1024,
        ..BolaParams::default()
    };
    params.validate().unwrap();
    let mut det = BolaDetector::new(&params);
    let principals: Vec<String> = (0..400).map(|i| format!("jwt:sub=crawler{i}")).collect();
    let ids: Vec<u64> = (0..1024).collect();
    for principal in &principals {
        for chunk in ids.chunks(16) {
            assert!(det.observe(&call(T0, principal, chunk, 200)).is_none());
        }
    }
    // 262 144 values of about 1024 per key: at most 256 keys.
    assert!(det.tracked_keys() <= 256, "{}", det.tracked_keys());
    assert!(det.tracked_keys() >= 128, "{}", det.tracked_keys());
}

// ---------------------------------------------------------------------------------------------
// Time

#[test]
fn time_zero_and_repeated_times() {
    let mut det = AuthFailureDetector::new(&AuthFailureParams::default());
    assert_eq!(
        run(
            &mut det,
            (0..25).map(|_| call(0, "jwt:sub=alice", &[], 401))
        )
        .len(),
        1
    );
    let mut det = bola();
    let ids: Vec<[u64; 1]> = (0..50).map(|id| [id]).collect();
    assert_eq!(
        run(
            &mut det,
            ids.iter().map(|id| call(0, "jwt:sub=alice", id, 200))
        )
        .len(),
        1
    );
    let mut det = RateDetector::new(&RateParams::default());
    assert_eq!(
        run(
            &mut det,
            (0..150).map(|_| call(0, "jwt:sub=alice", &[], 200))
        )
        .len(),
        1
    );
    let mut det = ExposureDetector::new(&ExposureParams::default());
    assert!(run(&mut det, (0..30).map(|_| response(0, 1000, 0))).is_empty());
    assert_eq!(run(&mut det, [response(0, 1_000_000, 0)]).len(), 1);
}

#[test]
fn clock_going_back_a_little_still_counts() {
    let mut det = AuthFailureDetector::new(&AuthFailureParams::default());
    // Times jitter back and forth by up to a second.
    let found = run(
        &mut det,
        (0..25u64).map(|i| {
            call(
                T0 + i * 200 - if i % 2 == 0 { 0 } else { 900 },
                "jwt:sub=alice",
                &[],
                401,
            )
        }),
    );
    assert_eq!(found.len(), 1);
    let mut det = bola();
    let ids: Vec<[u64; 1]> = (0..25).map(|id| [id]).collect();
    let found = run(
        &mut det,
        ids.iter()
            .enumerate()
            .map(|(i, id)| call(T0 + 10 * SEC - i as u64 * 300, "jwt:sub=m", id, 404)),
    );
    assert_eq!(found.len(), 1);
}

#[test]
fn clock_stepping_far_back_restarts_the_windows() {
    let mut det = AuthFailureDetector::new(&AuthFailureParams::default());
    assert!(
        run(
            &mut det,
            (0..15u64).map(|i| call(T0 + i, "jwt:sub=alice", &[], 401))
        )
        .is_empty()
    );
    // An hour back: the old failures are not mixed with the new ones.
    let back = T0 - 3600 * SEC;
    assert!(
        run(
            &mut det,
            (0..15u64).map(|i| call(back + i, "jwt:sub=alice", &[], 401))
        )
        .is_empty()
    );
    assert_eq!(
        run(
            &mut det,
            (0..5u64).map(|i| call(back + 100 + i, "jwt:sub=alice", &[], 401))
        )
        .len(),
        1
    );
    // A key quiet after firing re-arms when the clock steps back.
    assert_eq!(
        run(
            &mut det,
            (0..20u64).map(|i| call(i, "jwt:sub=alice", &[], 401))
        )
        .len(),
        1
    );
    // Back to the real time: windows restart once more.
    assert!(
        run(
            &mut det,
            (0..19u64).map(|i| call(T0 + i, "jwt:sub=alice", &[], 401))
        )
        .is_empty()
    );
}

#[test]
fn idle_gaps_empty_the_windows_and_keep_the_baseline() {
    let mut det = AuthFailureDetector::new(&AuthFailureParams::default());
    assert!(
        run(
            &mut det,
            (0..19u64).map(|i| call(T0 + i, "jwt:sub=alice", &[], 401))
        )
        .is_empty()
    );
    let later = T0 + 10 * 3600 * SEC;
    assert!(
        run(
            &mut det,
            (0..19u64).map(|i| call(later + i, "jwt:sub=alice", &[], 401))
        )
        .is_empty()
    );
    assert_eq!(
        run(&mut det, [call(later + 100, "jwt:sub=alice", &[], 401)]).len(),
        1
    );

    let mut det = rate_with_baseline_50();
    // Ten idle hours, then the same steady traffic, then 2× (below 5×): the baseline held.
    let later = T0 + 10 * 3600 * SEC;
    assert!(
        run(
            &mut det,
            steady(later, 60, 5).map(|t| call(t, "jwt:sub=svc", &[], 200))
        )
        .is_empty()
    );
    assert!(
        run(
            &mut det,
            steady(later + 60 * SEC, 60, 20).map(|t| call(t, "jwt:sub=svc", &[], 200))
        )
        .is_empty()
    );

    let mut det = bola_with_baseline_15();
    let ids: Vec<[u64; 1]> = (0..60).map(|id| [id]).collect();
    let found = run(
        &mut det,
        ids.iter().map(|id| call(later, "jwt:sub=batch", id, 200)),
    );
    assert_eq!(found.len(), 1);
    assert!(
        found[0].evidence.contains("(threshold 45, baseline 15."),
        "{}",
        found[0].evidence
    );

    // At the very end of time nothing overflows.
    let mut det = RateDetector::new(&RateParams::default());
    assert_eq!(
        run(
            &mut det,
            (0..150).map(|_| call(u64::MAX, "jwt:sub=x", &[], 200))
        )
        .len(),
        1
    );
    let mut det = bola();
    assert_eq!(
        run(
            &mut det,
            ids.iter()
                .map(|id| call(u64::MAX - 1, "jwt:sub=x", id, 200))
        )
        .len(),
        1
    );
}

// ---------------------------------------------------------------------------------------------
// Parameters

/// The rule pack's `match:` as the integrating engineer declares it.
#[derive(Debug, Deserialize)]
#[serde(tag = "detector", rename_all = "snake_case")]
enum Match {
    Bola(BolaParams),
    AuthFailures(AuthFailureParams),
    CredentialStuffing(CredentialStuffingParams),
    TokenSpread(TokenSpreadParams),
    Rate(RateParams),
    Exposure(ExposureParams),
}

fn parse(yaml: &str) -> Result<Match, serde_yaml_ng::Error> {
    serde_yaml_ng::from_str(yaml)
}

#[test]
fn params_parse_inside_a_tagged_enum() {
    let Match::Bola(p) =
        parse("{detector: bola, distinct_ids: 30, window_secs: 120, baseline_factor: 4}").unwrap()
    else {
        panic!()
    };
    assert_eq!(
        p,
        BolaParams {
            distinct_ids: 30,
            window_secs: 120,
            baseline_factor: 4.0
        }
    );
    let Match::AuthFailures(p) = parse("{detector: auth_failures, per: source}").unwrap() else {
        panic!()
    };
    assert_eq!(
        p,
        AuthFailureParams {
            per: AuthFailureScope::Source,
            ..AuthFailureParams::default()
        }
    );
    let Match::Rate(p) = parse("{detector: rate, per: endpoint, distinct_sources: 10}").unwrap()
    else {
        panic!()
    };
    assert_eq!(p.distinct_sources, Some(10));
    assert_eq!(p.min_requests, 100);
    p.validate().unwrap();
    let Match::CredentialStuffing(p) = parse("detector: credential_stuffing").unwrap() else {
        panic!()
    };
    assert_eq!(p, CredentialStuffingParams::default());
    let Match::TokenSpread(p) = parse("{detector: token_spread, distinct_sources: 3}").unwrap()
    else {
        panic!()
    };
    assert_eq!(p.distinct_sources, 3);
    let Match::Exposure(p) = parse("{detector: exposure, min_bytes: 1048576}").unwrap() else {
        panic!()
    };
    assert_eq!(
        p,
        ExposureParams {
            min_bytes: 1_048_576,
            ..ExposureParams::default()
        }
    );
}

#[test]
fn params_reject_unknown_fields_and_bad_values() {
    let err = parse("{detector: bola, distinct_idz: 3}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("distinct_idz"), "{err}");
    assert!(parse("{detector: auth_failures, per: planet}").is_err());
    assert!(parse("{detector: rate, per: source}").is_err());
    assert!(parse("{detector: exposure, warmup_calls: -1}").is_err());
}

#[test]
fn defaults_are_the_documented_ones_and_valid() {
    let all = [
        Matcher::Bola(BolaParams::default()),
        Matcher::AuthFailures(AuthFailureParams::default()),
        Matcher::CredentialStuffing(CredentialStuffingParams::default()),
        Matcher::TokenSpread(TokenSpreadParams::default()),
        Matcher::Rate(RateParams::default()),
        Matcher::Exposure(ExposureParams::default()),
    ];
    for params in &all {
        params.validate().unwrap();
        let mut det = detector(params).expect("an abuse matcher");
        assert!(det.observe(&call(T0, "jwt:sub=alice", &[1], 200)).is_none());
    }
    let d = BolaParams::default();
    assert_eq!(
        (d.distinct_ids, d.window_secs, d.baseline_factor),
        (20, 60, 3.0)
    );
    let r = RateParams::default();
    assert_eq!(
        (
            r.per,
            r.min_requests,
            r.window_secs,
            r.baseline_factor,
            r.distinct_sources
        ),
        (RateScope::Principal, 100, 10, 5.0, None)
    );
    let e = ExposureParams::default();
    assert_eq!(
        (
            e.size_factor,
            e.min_bytes,
            e.sensitive_factor,
            e.min_sensitive,
            e.warmup_calls
        ),
        (10.0, 65_536, 5.0, 10, 20)
    );
    fn send<T: Send>(_: &T) {}
    send(&detector(&all[0]).expect("an abuse matcher"));
}

#[test]
fn validate_explains_what_is_out_of_range() {
    let cases: [(Matcher, &str); 12] = [
        (
            Matcher::Bola(BolaParams {
                distinct_ids: 0,
                ..BolaParams::default()
            }),
            "distinct_ids",
        ),
        (
            Matcher::Bola(BolaParams {
                distinct_ids: 5000,
                ..BolaParams::default()
            }),
            "distinct_ids",
        ),
        (
            Matcher::Bola(BolaParams {
                window_secs: 0,
                ..BolaParams::default()
            }),
            "window_secs",
        ),
        (
            Matcher::Bola(BolaParams {
                baseline_factor: f64::NAN,
                ..BolaParams::default()
            }),
            "baseline_factor",
        ),
        (
            Matcher::Bola(BolaParams {
                baseline_factor: 0.5,
                ..BolaParams::default()
            }),
            "baseline_factor",
        ),
        (
            Matcher::AuthFailures(AuthFailureParams {
                failures: 0,
                ..AuthFailureParams::default()
            }),
            "failures",
        ),
        (
            Matcher::CredentialStuffing(CredentialStuffingParams {
                distinct_users: 1,
                ..CredentialStuffingParams::default()
            }),
            "distinct_users",
        ),
        (
            Matcher::TokenSpread(TokenSpreadParams {
                window_secs: 100_000,
                ..TokenSpreadParams::default()
            }),
            "window_secs",
        ),
        (
            Matcher::Rate(RateParams {
                distinct_sources: Some(10),
                ..RateParams::default()
            }),
            "per: endpoint",
        ),
        (
            Matcher::Rate(RateParams {
                per: RateScope::Endpoint,
                distinct_sources: Some(1),
                ..RateParams::default()
            }),
            "distinct_sources",
        ),
        (
            Matcher::Exposure(ExposureParams {
                size_factor: f64::INFINITY,
                ..ExposureParams::default()
            }),
            "size_factor",
        ),
        (
            Matcher::Exposure(ExposureParams {
                warmup_calls: 0,
                ..ExposureParams::default()
            }),
            "warmup_calls",
        ),
    ];
    for (params, field) in cases {
        let err = params.validate().unwrap_err();
        assert!(err.contains(field), "{params:?}: {err}");
    }
}

#[test]
fn unvalidated_params_never_panic() {
    let all = [
        Matcher::Bola(BolaParams {
            distinct_ids: 0,
            window_secs: 0,
            baseline_factor: f64::NAN,
        }),
        Matcher::AuthFailures(AuthFailureParams {
            failures: 0,
            window_secs: u64::MAX,
            per: AuthFailureScope::Source,
        }),
        Matcher::CredentialStuffing(CredentialStuffingParams {
            distinct_users: 0,
            window_secs: 0,
        }),
        Matcher::TokenSpread(TokenSpreadParams {
            distinct_sources: u32::MAX,
            window_secs: 0,
        }),
        Matcher::Rate(RateParams {
            per: RateScope::Endpoint,
            min_requests: 0,
            window_secs: 0,
            baseline_factor: f64::INFINITY,
            distinct_sources: Some(0),
        }),
        Matcher::Exposure(ExposureParams {
            size_factor: f64::NAN,
            min_bytes: 0,
            sensitive_factor: -1.0,
            min_sensitive: 0,
            warmup_calls: 0,
        }),
    ];
    for params in &all {
        let mut det = detector(params).expect("an abuse matcher");
        for i in 0..100u64 {
            let ids = [i, i + 1];
            let obs = Observation {
                login_user: Some(i),
                credential: Some(i % 3),
                source: if i % 2 == 0 { "a" } else { "b" },
                ..call(i * 7919 % 1000, "p", &ids, [200, 401, 404][i as usize % 3])
            };
            det.observe(&obs);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regularity

#[test]
fn a_script_on_a_fixed_sleep_is_bot_like_and_a_person_is_not() {
    let mut det = RegularityDetector::new(&RegularityParams::default());
    // One call every 2 s, give or take 20 ms: a script.
    let found = run(
        &mut det,
        (0..60u64).map(|i| call(T0 + i * 2 * SEC + (i % 3) * 10, "key:bot", &[], 200)),
    );
    assert_eq!(found.len(), 3, "once per span of 20 calls: {found:?}");
    assert!(
        found[0].evidence.contains("20 calls"),
        "{}",
        found[0].evidence
    );
    // A person: gaps from 0.3 s to 9 s.
    let gaps = [
        300u64, 4_000, 1_200, 9_000, 700, 2_500, 6_100, 400, 3_300, 800,
    ];
    let mut at = T0;
    let person = run(
        &mut det,
        (0..60usize).map(|i| {
            at += gaps[i % gaps.len()];
            call(at, "jwt:sub=alice", &[], 200)
        }),
    );
    assert!(person.is_empty(), "{person:?}");
    // A burst with no gaps is not a rhythm, and a long pause starts over.
    let burst = run(
        &mut det,
        (0..40u64).map(|_| call(T0, "ip:10.0.0.9", &[], 200)),
    );
    assert!(burst.is_empty());
    let paused = run(
        &mut det,
        (0..30u64).map(|i| {
            call(
                T0 + i * 2 * SEC + (i / 10) * 3_600 * SEC,
                "key:cron",
                &[],
                200,
            )
        }),
    );
    assert!(paused.is_empty(), "{paused:?}");
}

#[test]
fn regularity_parameters_are_checked() {
    let bad = RegularityParams {
        min_requests: 2,
        ..RegularityParams::default()
    };
    assert!(bad.validate().unwrap_err().contains("min_requests"));
    assert!(RegularityParams::default().validate().is_ok());
}

#[test]
fn a_burst_begun_late_in_a_window_does_not_teach_its_first_part_as_the_baseline() {
    let mut det = RateDetector::new(&RateParams {
        per: RateScope::Endpoint,
        ..RateParams::default()
    });
    // 90 calls in the last 3 s of the key's first window, then 150 more in the next 2 s: one
    // burst of 240 calls in 5 s, far above the floor of 100.
    let first = (0..90u64).map(|i| call(T0 + 7 * SEC + i * 30, "ip:10.0.0.7", &[], 200));
    let next = (0..150u64).map(|i| call(T0 + 10 * SEC + i * 10, "ip:10.0.0.7", &[], 200));
    let found = run(&mut det, first.chain(next));
    assert_eq!(found.len(), 1, "{found:?}");
}
