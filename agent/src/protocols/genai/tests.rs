use bytes::Bytes;

use super::*;
use crate::testing::{header, post};

fn exchange(
    host: &str,
    path: &str,
    request: &str,
    content_type: &str,
    response: &str,
) -> HttpExchange {
    let answer = vec![header("content-type", content_type)];
    post(
        path,
        vec![header("host", host)],
        request,
        Some((answer, response)),
    )
}

#[test]
fn an_openai_chat_completion_gives_model_usage_and_finish_reasons() {
    let call = describe(&exchange(
        "api.openai.com",
        "/v1/chat/completions",
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0.2,"max_completion_tokens":64}"#,
        "application/json",
        r#"{"id":"chatcmpl-9","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"},{"index":1,"message":{"role":"assistant","content":"he"},"finish_reason":"length"}],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#,
    ))
    .unwrap();
    assert_eq!(
        call,
        GenAiCall {
            operation: GenAiOperation::Chat,
            provider: "openai",
            request_model: Some("gpt-4o-mini".into()),
            response_model: Some("gpt-4o-mini-2024-07-18".into()),
            response_id: Some("chatcmpl-9".into()),
            finish_reasons: vec!["stop".into(), "length".into()],
            input_tokens: Some(12),
            output_tokens: Some(5),
            temperature: Some(0.2),
            top_p: None,
            max_tokens: Some(64),
            streamed: false,
            time_to_first_chunk_ns: None,
            incomplete: false,
        }
    );
}

#[test]
fn an_openai_stream_reads_its_chunks_in_order() {
    let stream = "data: {\"id\":\"chatcmpl-1\",\"model\":\"local-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n\
                  data: {\"id\":\"chatcmpl-1\",\"model\":\"local-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n\
                  data: {\"id\":\"chatcmpl-1\",\"model\":\"local-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                  data: {\"id\":\"chatcmpl-1\",\"model\":\"local-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n\
                  data: [DONE]\n\n";
    let call = describe(&exchange(
        "127.0.0.1:8000",
        "/v1/chat/completions",
        r#"{"model":"local-model","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#,
        "text/event-stream; charset=utf-8",
        stream,
    ))
    .unwrap();
    assert_eq!(call.provider, "openai", "a self-hosted compatible server");
    assert_eq!(call.response_id.as_deref(), Some("chatcmpl-1"));
    assert_eq!(call.finish_reasons, ["stop"]);
    assert_eq!((call.input_tokens, call.output_tokens), (Some(7), Some(2)));
    assert!(call.streamed && !call.incomplete);
}

#[test]
fn a_stream_cut_by_the_body_cap_keeps_what_it_saw_and_says_so() {
    let stream = "data: {\"id\":\"c-1\",\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"c-1\",\"mod";
    let mut http = exchange(
        "localhost",
        "/v1/chat/completions",
        "{}",
        "text/event-stream",
        stream,
    );
    if let Some(response) = &mut http.response {
        response.body.size = 100_000;
    }
    let call = describe(&http).unwrap();
    assert_eq!(call.response_model.as_deref(), Some("m"));
    assert!(call.finish_reasons.is_empty() && call.output_tokens.is_none());
    assert!(call.incomplete);
}

#[test]
fn anthropic_messages_plain_and_streamed() {
    let plain = describe(&exchange(
        "api.anthropic.com",
        "/v1/messages",
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[]}"#,
        "application/json",
        r#"{"id":"msg_01","type":"message","model":"claude-sonnet-4-5-20250929","stop_reason":"end_turn","usage":{"input_tokens":20,"output_tokens":9}}"#,
    ))
    .unwrap();
    assert_eq!(
        (
            plain.provider,
            plain.max_tokens,
            plain.finish_reasons.clone()
        ),
        ("anthropic", Some(1024), vec!["end_turn".to_owned()])
    );
    assert_eq!(
        (plain.input_tokens, plain.output_tokens),
        (Some(20), Some(9))
    );

    let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_02\",\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
                  event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
                  event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":15}}\n\n\
                  event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let streamed = describe(&exchange(
        "api.anthropic.com",
        "/v1/messages",
        r#"{"model":"claude-haiku-4-5","stream":true}"#,
        "text/event-stream",
        stream,
    ))
    .unwrap();
    assert_eq!(streamed.response_id.as_deref(), Some("msg_02"));
    assert_eq!(streamed.finish_reasons, ["max_tokens"]);
    assert_eq!(
        (streamed.input_tokens, streamed.output_tokens),
        (Some(25), Some(15))
    );
}

#[test]
fn gemini_names_its_model_in_the_path() {
    let call = describe(&exchange(
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        r#"{"contents":[],"generationConfig":{"temperature":0.5,"topP":0.9,"maxOutputTokens":100}}"#,
        "application/json",
        r#"{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6},"modelVersion":"gemini-2.5-flash","responseId":"r-1"}"#,
    ))
    .unwrap();
    assert_eq!(call.operation, GenAiOperation::GenerateContent);
    assert_eq!(
        (call.provider, call.request_model.as_deref()),
        ("gcp.gemini", Some("gemini-2.5-flash"))
    );
    assert_eq!(
        (call.temperature, call.top_p, call.max_tokens),
        (Some(0.5), Some(0.9), Some(100))
    );
    assert_eq!(
        (
            call.finish_reasons.clone(),
            call.input_tokens,
            call.output_tokens
        ),
        (vec!["STOP".to_owned()], Some(4), Some(6))
    );
}

#[test]
fn ollama_streams_json_lines() {
    let lines = "{\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n\
                 {\"model\":\"llama3.2\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":26,\"eval_count\":3}\n";
    let call = describe(&exchange(
        "localhost:11434",
        "/api/chat",
        r#"{"model":"llama3.2","messages":[],"options":{"temperature":0.1,"num_predict":32}}"#,
        "application/x-ndjson",
        lines,
    ))
    .unwrap();
    assert_eq!(
        (call.provider, call.operation),
        ("ollama", GenAiOperation::Chat)
    );
    assert_eq!((call.temperature, call.max_tokens), (Some(0.1), Some(32)));
    assert_eq!(call.finish_reasons, ["stop"]);
    assert_eq!(
        (call.input_tokens, call.output_tokens, call.streamed),
        (Some(26), Some(3), true)
    );
}

#[test]
fn other_requests_are_not_model_calls_and_bad_bodies_give_no_fields() {
    assert!(describe(&exchange("shop", "/orders", "{}", "application/json", "{}")).is_none());
    let mut get = exchange(
        "api.openai.com",
        "/v1/chat/completions",
        "",
        "application/json",
        "",
    );
    get.request.method = "GET".into();
    assert!(describe(&get).is_none());
    let garbage = describe(&exchange(
        "api.openai.com",
        "/v1/embeddings",
        "\u{0}\u{1}not json",
        "application/json",
        "[1,2,",
    ))
    .unwrap();
    assert_eq!(garbage.operation, GenAiOperation::Embeddings);
    assert_eq!(garbage.request_model, None);
    assert_eq!(garbage.response_model, None);
}

#[test]
fn a_long_stream_is_summed_up_from_its_kept_tail() {
    let start = "data: {\"id\":\"c-7\",\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"c-7\",\"mo";
    let tail = "ntent\":\"z\"},\"finish_reason\":null}]}\n\n\
                data: {\"id\":\"c-7\",\"model\":\"m\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                data: {\"id\":\"c-7\",\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":900}}\n\n\
                data: [DONE]\n\n";
    let mut http = exchange(
        "localhost",
        "/v1/chat/completions",
        "{}",
        "text/event-stream",
        start,
    );
    if let Some(response) = &mut http.response {
        response.body.size = 200_000;
        response.body.tail = Bytes::copy_from_slice(tail.as_bytes());
    }
    let call = describe(&http).unwrap();
    assert_eq!(call.response_id.as_deref(), Some("c-7"));
    assert_eq!(call.finish_reasons, ["stop"]);
    assert_eq!(
        (call.input_tokens, call.output_tokens),
        (Some(3), Some(900))
    );
    assert!(!call.incomplete, "only content deltas are missing");
}
