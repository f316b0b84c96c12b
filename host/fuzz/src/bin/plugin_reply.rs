//! AFL++ entry point for [`agent_fuzz::plugin_reply`].
fn main() {
    afl::fuzz!(|data: &[u8]| agent_fuzz::plugin_reply(data));
}
