//! AFL++ entry point for [`agent_fuzz::envelope`].
fn main() {
    afl::fuzz!(|data: &[u8]| agent_fuzz::envelope(data));
}
