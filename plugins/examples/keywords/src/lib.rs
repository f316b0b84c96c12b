//! `keywords`: the most frequent words of a text.
//!
//! Input `{"text": "...", "top": N}` (`top` optional, 1 to 100, default 10).
//! Output `{"keywords": [...]}`: the `top` most frequent words after lower-casing
//! and dropping English stop words, most frequent first, ties in alphabetical
//! order. A word is a run of letters, digits and inner apostrophes that holds at
//! least one letter (`don't` is one word, `42` is none).

use std::collections::BTreeMap;

pub use agent_plugin_sdk::Error;
use serde::{Deserialize, Serialize};

const DEFAULT_TOP: usize = 10;
const MAX_TOP: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    text: String,
    top: Option<usize>,
}

#[derive(Serialize)]
struct Output<'a> {
    keywords: Vec<&'a str>,
}

/// The component's export. Only for wasm: the crate is also linked natively
/// (by the load benchmark), where exporting the contract's symbols makes no
/// sense.
#[cfg(target_family = "wasm")]
mod component {
    use agent_plugin_sdk::{Error, Plugin, Request, Response, export_plugin};

    struct Keywords;

    impl Plugin for Keywords {
        fn reason(request: Request) -> Result<Response, Error> {
            let (output, distinct) = super::keywords_json(request.input_json())?;
            Ok(Response::raw_json(output)
                .with_note(format!("{distinct} distinct words after stop words")))
        }
    }

    export_plugin!(Keywords);
}

/// The whole computation, JSON in and JSON out: the plugin's answer and the
/// number of distinct words. Public so that the load benchmark can run the
/// same logic natively, outside the sandbox, as its baseline.
pub fn keywords_json(input: &str) -> Result<(String, usize), Error> {
    let input: Input =
        serde_json::from_str(input).map_err(|e| Error::invalid_input(format!("input: {e}")))?;
    let top = input.top.unwrap_or(DEFAULT_TOP);
    if !(1..=MAX_TOP).contains(&top) {
        return Err(Error::invalid_input(format!(
            "`top` must be between 1 and {MAX_TOP}, got {top}"
        )));
    }
    let counts = count_words(&input.text);
    let keywords = most_frequent(&counts, top);
    let output = serde_json::to_string(&Output { keywords })
        .map_err(|e| Error::failed(format!("cannot encode output: {e}")))?;
    Ok((output, counts.len()))
}

/// Counts each non-stop word, lower-cased.
fn count_words(text: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for token in text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '\u{2019}')) {
        let word = token
            .trim_matches(|c| c == '\'' || c == '\u{2019}')
            .replace('\u{2019}', "'")
            .to_lowercase();
        if word.chars().any(char::is_alphabetic) && !is_stop_word(&word) {
            *counts.entry(word).or_insert(0) += 1;
        }
    }
    counts
}

/// The `top` words by count, descending; ties alphabetical (the map is sorted).
fn most_frequent(counts: &BTreeMap<String, usize>, top: usize) -> Vec<&str> {
    let mut ranked: Vec<(&str, usize)> = counts.iter().map(|(w, n)| (w.as_str(), *n)).collect();
    // Stable sort keeps the map's alphabetical order among equal counts.
    ranked.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    ranked.into_iter().take(top).map(|(w, _)| w).collect()
}

fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

/// English stop words, sorted (checked by a test) for binary search.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "aren't",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "can't",
    "cannot",
    "could",
    "couldn't",
    "did",
    "didn't",
    "do",
    "does",
    "doesn't",
    "doing",
    "don't",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "hadn't",
    "has",
    "hasn't",
    "have",
    "haven't",
    "having",
    "he",
    "he'd",
    "he'll",
    "he's",
    "her",
    "here",
    "here's",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "how's",
    "i",
    "i'd",
    "i'll",
    "i'm",
    "i've",
    "if",
    "in",
    "into",
    "is",
    "isn't",
    "it",
    "it's",
    "its",
    "itself",
    "let's",
    "me",
    "more",
    "most",
    "mustn't",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "ought",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "shan't",
    "she",
    "she'd",
    "she'll",
    "she's",
    "should",
    "shouldn't",
    "so",
    "some",
    "such",
    "than",
    "that",
    "that's",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "there's",
    "these",
    "they",
    "they'd",
    "they'll",
    "they're",
    "they've",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "wasn't",
    "we",
    "we'd",
    "we'll",
    "we're",
    "we've",
    "were",
    "weren't",
    "what",
    "what's",
    "when",
    "when's",
    "where",
    "where's",
    "which",
    "while",
    "who",
    "who's",
    "whom",
    "why",
    "why's",
    "will",
    "with",
    "won't",
    "would",
    "wouldn't",
    "you",
    "you'd",
    "you'll",
    "you're",
    "you've",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_and_unique() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn ranks_by_count_then_alphabetically() {
        let counts = count_words("The cat and the dog. A dog, a cat; a bird! Zebra zebra zebra");
        assert_eq!(most_frequent(&counts, 3), ["zebra", "cat", "dog"]);
        assert_eq!(most_frequent(&counts, 10), ["zebra", "cat", "dog", "bird"]);
    }

    #[test]
    fn words_keep_inner_apostrophes_and_need_a_letter() {
        let counts = count_words("Rust's borrow checker won't budge 42 42 'quoted'");
        let words: Vec<&str> = counts.keys().map(String::as_str).collect();
        assert_eq!(words, ["borrow", "budge", "checker", "quoted", "rust's"]);
    }
}
