//! AFL++ entry point for [`agent_fuzz::request_headers`].
fn main() {
    afl::fuzz!(|data: &[u8]| agent_fuzz::request_headers(data));
}
