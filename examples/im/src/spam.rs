//! `im.spam.SpamSvr`: a content check by simple rules. The gateway calls it as a weak
//! dependency: when it is down or slow, messages go through unchecked and the framework
//! counts the skip (`svrkit_client_weak_skips_total`).

use serde::Deserialize;
use svrkit_runtime::{Context, Status};

use crate::im::spam::{CheckReq, CheckResp, SpamSvr, Verdict};

/// `[app.spam]` settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpamConfig {
    /// Phrases that make a message spam, matched case-insensitively.
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
    banned: Vec<String>,
    max_links: usize,
}

impl Spam {
    /// A check with these rules.
    pub fn new(config: &SpamConfig) -> Spam {
        Spam {
            banned: config.banned.iter().map(|b| b.to_lowercase()).collect(),
            max_links: config.max_links,
        }
    }

    /// Why `text` is spam, if it is.
    pub fn judge(&self, text: &str) -> Option<String> {
        let lower = text.to_lowercase();
        if let Some(phrase) = self.banned.iter().find(|b| lower.contains(b.as_str())) {
            return Some(format!("contains \"{phrase}\""));
        }
        let links = lower.matches("http://").count() + lower.matches("https://").count();
        (links > self.max_links).then(|| format!("{links} links (at most {})", self.max_links))
    }
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
