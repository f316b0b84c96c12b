//! AFL++ entry point for [`agent_fuzz::trust_list`].
fn main() {
    afl::fuzz!(|data: &[u8]| agent_fuzz::trust_list(data));
}
