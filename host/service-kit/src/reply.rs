//! What a plugin's answer may cost in the reply: one budget, counted as the
//! bytes the reply will carry, not as the bytes the plugin handed over.
//!
//! - Output and notes share the plugin's output limit. A note counts as the
//!   JSON string it becomes (a control character is six bytes escaped) plus
//!   its separator, so many empty notes or notes of control characters
//!   cannot pass small and arrive large; at most [`MAX_NOTES`] notes.
//! - An error message the plugin reports (or a trap's text) is cut to
//!   [`MAX_MESSAGE_BYTES`] as encoded, with a marker saying how much was cut.

/// Notes one answer may carry.
pub const MAX_NOTES: usize = 64;

/// Longest error message a reply carries, in encoded bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The bytes `c` takes inside a JSON string.
fn encoded_char(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The bytes `text` takes as a JSON string, quotes included.
pub fn encoded_len(text: &str) -> usize {
    text.chars().map(encoded_char).sum::<usize>() + 2
}

/// What `notes` add to a reply: each as a JSON string, plus a separator.
pub fn notes_len(notes: &[String]) -> usize {
    notes.iter().map(|n| encoded_len(n) + 1).sum()
}

/// `message` cut to at most [`MAX_MESSAGE_BYTES`] encoded bytes, with a
/// marker saying how many bytes of it were left out.
pub fn bounded_message(message: String) -> String {
    if encoded_len(&message) <= MAX_MESSAGE_BYTES {
        return message;
    }
    // Room for the marker, whose digits are at most 20.
    let room = MAX_MESSAGE_BYTES - 64;
    let mut used = 2;
    let mut end = 0;
    for (i, c) in message.char_indices() {
        let cost = encoded_char(c);
        if used + cost > room {
            break;
        }
        used += cost;
        end = i + c.len_utf8();
    }
    let cut = message.len() - end;
    let mut bounded = message;
    bounded.truncate(end);
    bounded.push_str(&format!(" ... [cut: {cut} more bytes]"));
    bounded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_lengths_match_serde_json() {
        for text in [
            "",
            "plain",
            "quote \" and \\",
            "tab\tline\n",
            "\u{1}\u{1f}",
            "é€😀",
            "\u{7f}",
        ] {
            assert_eq!(
                encoded_len(text),
                serde_json::to_string(text).unwrap().len(),
                "{text:?}"
            );
        }
        let notes = vec![String::new(), "\u{1}".to_owned()];
        assert_eq!(
            notes_len(&notes),
            serde_json::to_string(&notes).unwrap().len() - 2 + 1
        );
    }

    #[test]
    fn long_messages_are_cut_with_a_marker_and_short_ones_kept() {
        assert_eq!(bounded_message("short".into()), "short");
        for unit in ["x", "\u{1}", "é", "😀"] {
            let message = unit.repeat(1 << 20);
            let bounded = bounded_message(message.clone());
            assert!(encoded_len(&bounded) <= MAX_MESSAGE_BYTES, "{unit:?}");
            assert!(bounded.ends_with("more bytes]"));
            assert!(message.starts_with(bounded.split(" ... [cut").next().unwrap()));
        }
    }
}
