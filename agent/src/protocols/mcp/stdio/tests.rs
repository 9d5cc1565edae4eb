use agent_common::{Direction, Role};

use super::StdioDecoder;
use crate::{
    calls::{ApiCall, Side},
    protocols::{
        Decoder, DecoderSettings,
        mcp::{McpCall, McpOutcome},
    },
    testing,
};

struct Feed {
    decoder: StdioDecoder,
    connection: std::sync::Arc<crate::streams::Connection>,
    offsets: [u64; 2],
    calls: Vec<ApiCall>,
}

impl Feed {
    fn new() -> Self {
        Self {
            decoder: StdioDecoder::new(DecoderSettings { body_cap: 4096 }),
            connection: testing::connection(1, Role::Server),
            offsets: [0; 2],
            calls: Vec::new(),
        }
    }

    /// Feeds `data`, of which only the first `captured` bytes were copied.
    fn send(&mut self, direction: Direction, data: &[u8], captured: usize, ts_ns: u64) {
        let slot = direction as usize;
        let chunk = testing::chunk(
            &self.connection,
            direction,
            self.offsets[slot],
            &data[..captured],
            data.len() as u64,
            ts_ns,
        );
        self.offsets[slot] += data.len() as u64;
        self.decoder.on_chunk(&chunk, &mut self.calls);
    }

    fn send_whole(&mut self, direction: Direction, data: &[u8], ts_ns: u64) {
        self.send(direction, data, data.len(), ts_ns);
    }

    fn mcp(&self) -> Vec<&McpCall> {
        self.calls
            .iter()
            .map(|call| call.layer::<McpCall>().expect("an MCP call"))
            .collect()
    }
}

#[test]
fn requests_pair_with_their_responses_by_id_across_lines_and_reads() {
    let mut feed = Feed::new();
    let requests = concat!(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        "\n",
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","#
    );
    feed.send_whole(Direction::Ingress, requests.as_bytes(), 10);
    feed.send_whole(Direction::Ingress, b"\"arguments\":{}}}\n", 20);
    assert_eq!(feed.mcp().len(), 1, "the notification at once");
    let answers = concat!(
        r#"{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"5"}]}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"add","description":"Adds."}]}}"#,
        "\n"
    );
    feed.send_whole(Direction::Egress, answers.as_bytes(), 30);
    let calls = feed.mcp();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].method, "notifications/initialized");
    assert_eq!(calls[1].target.as_deref(), Some("add"));
    assert_eq!(calls[1].tool_output, "5");
    assert_eq!(calls[2].tools.len(), 1);
    assert!(feed.calls.iter().all(|call| call.side == Side::Server));
    assert_eq!((feed.calls[1].start_ns, feed.calls[1].end_ns), (10, 30));
}

#[test]
fn a_read_cut_by_the_capture_keeps_the_id_and_skips_to_the_next_line() {
    let mut feed = Feed::new();
    feed.send_whole(
        Direction::Ingress,
        br#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
        1,
    );
    feed.send_whole(Direction::Ingress, b"\n", 2);
    let long = format!(
        "{}{}\n{}\n",
        r#"{"jsonrpc":"2.0","id":4,"result":{"tools":[{"name":"a"},{"name":"b","description":""#,
        "x".repeat(1000),
        r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#
    );
    // Only the first 100 bytes were copied: the newline and the notification are lost.
    feed.send(Direction::Egress, long.as_bytes(), 100, 3);
    let calls = feed.mcp();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].incomplete);
    assert_eq!(calls[0].tools.len(), 1, "the whole first tool");
    assert!(feed.calls[0].gaps.response_incomplete);
    feed.send_whole(Direction::Egress, b"tail of a lost line\n", 4);
    feed.send_whole(
        Direction::Egress,
        b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n",
        5,
    );
    assert_eq!(feed.mcp().len(), 2, "in step again after the skipped line");
}

#[test]
fn unanswered_requests_end_with_the_connection_and_garbage_is_not_mcp() {
    let mut feed = Feed::new();
    feed.send_whole(
        Direction::Ingress,
        b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}\n",
        1,
    );
    feed.decoder.on_end(50, &mut feed.calls);
    let calls = feed.mcp();
    assert_eq!(calls[0].outcome, McpOutcome::Unanswered);
    assert!(feed.calls[0].gaps.response_missing);

    let mut other = Feed::new();
    other.send_whole(Direction::Ingress, b"hello world\n", 1);
    assert!(!other.decoder.wants_more());
}
