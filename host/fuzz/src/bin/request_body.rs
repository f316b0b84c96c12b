//! AFL++ entry point for [`agent_fuzz::request_body`].
fn main() {
    afl::fuzz!(|data: &[u8]| agent_fuzz::request_body(data));
}
