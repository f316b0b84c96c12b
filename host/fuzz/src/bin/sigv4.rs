//! AFL++ entry point for [`agent_fuzz::sigv4`].
fn main() {
    afl::fuzz!(|data: &[u8]| agent_fuzz::sigv4(data));
}
