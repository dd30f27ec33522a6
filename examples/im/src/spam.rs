//! `im.spam.SpamSvr`: a content check by simple rules. The gateway calls it as a weak
//! dependency: when it is down or slow, messages go through unchecked and the framework
//! counts the skip (`svrkit_client_weak_skips_total`).
//!
//! Rules match the *normalized* text ([`normalize`]), so that the ways of writing a phrase
//! a reader sees the same do not get past them: compatibility forms (full-width letters,
//! ligatures) are folded by NFKC, invisible characters (zero-width spaces and joiners, soft
//! hyphens, bidirectional marks) and accents are dropped, look-alike letters from other
//! scripts (Cyrillic `е` for Latin `e`) fold to one prototype by Unicode's confusables
//! table (UTS #39 skeletons, the `unicode-security` crate), and a phrase matches whole words
//! whatever stands between them (spaces, dashes, dots).

use serde::Deserialize;
use svrkit_runtime::{Context, Status};
use unicode_normalization::UnicodeNormalization;

use crate::im::spam::{CheckReq, CheckResp, SpamSvr, Verdict};

/// `[app.spam]` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpamConfig {
    /// Phrases that make a message spam, matched on normalized text (case, width, spacing,
    /// invisible characters and look-alike letters do not matter).
    pub banned: Vec<String>,
    /// Links a message may carry.
    pub max_links: usize,
}

impl Default for SpamConfig {
    fn default() -> SpamConfig {
        SpamConfig {
            banned: vec![
                "buy followers".into(),
                "free money".into(),
                "wire the fee".into(),
            ],
            max_links: 3,
        }
    }
}

/// The spam check.
#[derive(Debug)]
pub struct Spam {
    /// Each phrase normalized, and as configured (what a refusal names).
    banned: Vec<(String, String)>,
    max_links: usize,
}

impl Spam {
    /// A check with these rules.
    pub fn new(config: &SpamConfig) -> Spam {
        Spam {
            banned: config
                .banned
                .iter()
                .map(|b| (normalize(b), b.clone()))
                .filter(|(folded, _)| !folded.is_empty())
                .collect(),
            max_links: config.max_links,
        }
    }

    /// Why `text` is spam, if it is.
    pub fn judge(&self, text: &str) -> Option<String> {
        // Whole words: " free money " in " free money worries ", not in "freemoney".
        let words = format!(" {} ", normalize(text));
        if let Some((_, phrase)) = self
            .banned
            .iter()
            .find(|(b, _)| words.contains(&format!(" {b} ")))
        {
            return Some(format!("contains \"{phrase}\""));
        }
        let joined: String = fold(text).chars().filter(|c| !c.is_whitespace()).collect();
        let links = ["http://", "https://"]
            .iter()
            .map(|scheme| joined.matches(fold(scheme).as_str()).count())
            .sum::<usize>();
        (links > self.max_links).then(|| format!("{links} links (at most {})", self.max_links))
    }
}

/// `text` with what a reader does not see folded away: NFKC, lower case, invisible
/// characters dropped, accents dropped (NFD without combining marks), each letter its
/// confusables prototype. Punctuation and spacing stay.
fn fold(text: &str) -> String {
    let plain: String = text
        .nfkc()
        .flat_map(char::to_lowercase)
        .filter(|&c| !is_invisible(c))
        .nfd()
        .filter(|&c| !unicode_normalization::char::is_combining_mark(c))
        .collect();
    unicode_security::skeleton(&plain)
        .flat_map(char::to_lowercase)
        .collect()
}

/// `text` as the phrase rules see it: [`fold`]ed, then its words (letters and digits)
/// with one space between them, whatever stood between them (spaces, dashes, dots).
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut gap = true;
    for c in fold(text).chars() {
        if c.is_alphanumeric() {
            out.push(c);
            gap = false;
        } else if !gap {
            out.push(' ');
            gap = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// Characters that take no room on screen: format controls (zero-width space, joiners, word
/// joiner, byte-order mark, bidirectional marks and isolates), the soft hyphen, combining
/// grapheme joiner, Hangul fillers and variation selectors.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
        | '\u{FFA0}' | '\u{E0000}'..='\u{E0FFF}')
}

impl SpamSvr for Spam {
    async fn check(&self, _ctx: Context, request: CheckReq) -> Result<CheckResp, Status> {
        Ok(match self.judge(&request.text) {
            None => CheckResp::default(),
            Some(reason) => CheckResp {
                verdict: Verdict::REJECT,
                reason: reason.into(),
                ..CheckResp::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phrase_written_to_look_the_same_is_still_the_phrase() {
        let spam = Spam::new(&SpamConfig::default());
        for text in [
            "FREE MONEY, click",
            "free  money",                            // two spaces
            "free\tmoney",                            // a tab
            "free\u{200B} money",                     // a zero-width space
            "fr\u{200D}ee mo\u{00AD}ney",             // a joiner and a soft hyphen
            "fr\u{0435}e money",                      // Cyrillic small ie for e
            "free m\u{043E}ney",                      // Cyrillic small o
            "\u{FF26}\u{FF52}\u{FF45}\u{FF45} money", // full-width FREE
            "\u{1D41F}ree money",                     // mathematical bold f
            "FREE MОNEY",                             // Cyrillic capital O
        ] {
            assert!(spam.judge(text).is_some(), "{text:?} passed");
        }
        for text in ["free of money worries", "freemoney is one word", "hello"] {
            assert!(spam.judge(text).is_none(), "{text:?} refused");
        }
        // The refusal names the phrase as configured, not its folded form.
        assert_eq!(
            spam.judge("FREE MONEY").as_deref(),
            Some("contains \"free money\"")
        );
    }

    #[test]
    fn links_are_counted_however_they_are_spelled() {
        let spam = Spam::new(&SpamConfig::default());
        let plain = "http://a http://b https://c";
        assert!(spam.judge(plain).is_none());
        assert!(spam.judge(&format!("{plain} https://d")).is_some());
        assert!(spam.judge(&format!("{plain} HT\u{200B}TP://d")).is_some());
    }
}
