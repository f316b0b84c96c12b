//! AFL++ entry point for [`agent_fuzz::component`].
fn main() {
    afl::fuzz!(|data: &[u8]| agent_fuzz::component(data));
}
