use super::*;

fn table() -> StreamTable {
    StreamTable::new(StreamSettings {
        max_connections: 2,
        idle_timeout: Duration::from_nanos(1_000),
    })
}

fn seen(fd: i32, sock: u64, ts_ns: u64) -> CaptureEvent {
    CaptureEvent::Connection(ConnectionSeen {
        tgid: u32::MAX,
        fd,
        sock,
        role: Role::Client,
        local: "127.0.0.1:50000".parse().unwrap(),
        peer: "127.0.0.1:8080".parse().unwrap(),
        transport: crate::capture::Transport::Tcp,
        comm: "curl".into(),
        ts_ns,
    })
}

fn data(
    fd: i32,
    sock: u64,
    direction: Direction,
    len: u64,
    payload: &'static [u8],
) -> CaptureEvent {
    CaptureEvent::Data(DataChunk {
        tgid: u32::MAX,
        tid: 1,
        fd,
        sock,
        direction,
        flags: 0,
        len,
        offset: None,
        payload: Bytes::from_static(payload),
        ts_ns: 10,
        comm: "curl".into(),
    })
}

fn apply(table: &mut StreamTable, events: Vec<CaptureEvent>) -> StreamOutput {
    let mut out = StreamOutput::default();
    for event in events {
        table.apply(event, &mut out);
    }
    out
}

#[test]
fn offsets_advance_per_direction_by_original_length() {
    let mut table = table();
    let StreamOutput { chunks, .. } = apply(
        &mut table,
        vec![
            seen(3, 7, 1),
            data(3, 7, Direction::Egress, 4, b"GET "),
            data(3, 7, Direction::Egress, 100, b"trunc"),
            data(3, 7, Direction::Ingress, 8, b"HTTP/1.1"),
            data(3, 7, Direction::Egress, 2, b"\r\n"),
        ],
    );
    let offsets: Vec<(Direction, u64)> = chunks.iter().map(|c| (c.direction, c.offset)).collect();
    assert_eq!(
        offsets,
        [
            (Direction::Egress, 0),
            (Direction::Egress, 4),
            (Direction::Ingress, 0),
            (Direction::Egress, 104),
        ]
    );
    assert!(
        chunks
            .iter()
            .all(|c| c.connection.id == chunks[0].connection.id)
    );
    assert_eq!(chunks[0].connection.role, Role::Client);
    assert_eq!(
        chunks[0].connection.peer,
        Some("127.0.0.1:8080".parse().unwrap())
    );
}

#[test]
fn kernel_offsets_reveal_lost_records() {
    let mut table = table();
    let with_offset = |offset, len| {
        let CaptureEvent::Data(mut chunk) = data(3, 7, Direction::Ingress, len, b"x") else {
            unreachable!()
        };
        chunk.offset = Some(offset);
        CaptureEvent::Data(chunk)
    };
    let out = apply(
        &mut table,
        vec![
            seen(3, 7, 1),
            with_offset(0, 10),
            with_offset(25, 5),
            with_offset(3, 5),
        ],
    );
    let offsets: Vec<u64> = out.chunks.iter().map(|c| c.offset).collect();
    // 10..25 was in a lost record; the backwards count (kernel state reset) is not trusted.
    assert_eq!(offsets, [0, 25, 30]);
}

#[test]
fn a_new_socket_on_the_same_fd_is_a_new_connection() {
    let mut table = table();
    let out = apply(
        &mut table,
        vec![
            seen(3, 7, 1),
            data(3, 7, Direction::Egress, 4, b"GET "),
            seen(3, 8, 2),
            data(3, 8, Direction::Egress, 4, b"GET "),
        ],
    );
    let chunks = &out.chunks;
    assert_ne!(chunks[0].connection.id, chunks[1].connection.id);
    assert_eq!(chunks[1].offset, 0);
    // The first socket's connection ended when the fd got a new one.
    assert_eq!(out.ended, [(chunks[0].connection.id, 10)]);
}

#[test]
fn close_and_exit_forget_connections() {
    let mut table = table();
    let out = apply(
        &mut table,
        vec![
            seen(3, 7, 1),
            seen(4, 9, 1),
            CaptureEvent::Closed {
                tgid: u32::MAX,
                fd: 3,
                sock: 7,
                ts_ns: 5,
            },
        ],
    );
    assert!(out.requests.is_empty());
    assert_eq!(out.ended, [(1, 5)]);
    assert_eq!(table.len(), 1);
    let out = apply(
        &mut table,
        vec![CaptureEvent::Exit {
            tgid: u32::MAX,
            ts_ns: 6,
        }],
    );
    assert!(table.is_empty());
    assert_eq!(out.ended, [(2, 6)]);
    assert_eq!(
        out.requests,
        [CaptureRequest::ForgetConnections(vec![ConnKey {
            tgid: u32::MAX,
            fd: 4
        }])]
    );
}

#[test]
fn table_is_bounded_and_idle_connections_are_reclaimed() {
    let mut table = table();
    let out = apply(
        &mut table,
        vec![seen(3, 7, 1), seen(4, 8, 2), seen(5, 9, 3)],
    );
    assert_eq!(table.len(), 2);
    assert_eq!(table.evicted(), 1);
    assert_eq!(out.ended, [(1, 3)]);
    let mut ended = Vec::new();
    let reclaimed = table.reclaim_idle(1_003, &mut ended);
    assert_eq!(
        reclaimed,
        [ConnKey {
            tgid: u32::MAX,
            fd: 4
        }]
    );
    assert_eq!(ended, [(2, 1_003)]);
    assert_eq!(table.len(), 1);
}

#[test]
fn ipv4_peers_of_dual_stack_sockets_are_plain_ipv4() {
    let mut table = table();
    let mut seen = seen(3, 7, 1);
    if let CaptureEvent::Connection(connection) = &mut seen {
        connection.local = "[::ffff:127.0.0.1]:8080".parse().unwrap();
        connection.peer = "[::ffff:127.0.0.1]:50000".parse().unwrap();
    }
    let StreamOutput { chunks, .. } = apply(
        &mut table,
        vec![seen, data(3, 7, Direction::Ingress, 4, b"GET ")],
    );
    let connection = &chunks[0].connection;
    assert_eq!(connection.local, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(connection.peer, Some("127.0.0.1:50000".parse().unwrap()));
}
