//! AFL++ entry point for [`agent_fuzz::canonical`].
fn main() {
    afl::fuzz!(|data: &[u8]| agent_fuzz::canonical(data));
}
