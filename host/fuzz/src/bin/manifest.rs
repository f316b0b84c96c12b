//! AFL++ entry point for [`agent_fuzz::manifest`].
fn main() {
    afl::fuzz!(|data: &[u8]| agent_fuzz::manifest(data));
}
