//! The backend's own figures, beside the framework's per-method ones (`/metrics`, the
//! dashboard): registered once as business metrics (`svrkit_runtime::metrics::business`)
//! and kept as handles, so recording one is an atomic addition.

use std::sync::LazyLock;

use svrkit_runtime::metrics::business::{self, Counter, Family, Gauge, ValueHistogram};

/// Appends stored (not duplicates), by kind: `direct` (one recipient, no group) or `group`.
pub(crate) static APPENDS: LazyLock<&'static Family<Counter>> = LazyLock::new(|| {
    business::counter_with(
        "im_appends",
        "Messages stored (a repeat of one already stored not counted), by kind.",
        "kind",
        &["direct", "group"],
    )
});

/// Inbox entries one append wrote: its recipients.
pub(crate) static RECIPIENTS: LazyLock<&'static ValueHistogram> = LazyLock::new(|| {
    business::histogram(
        "im_recipients_per_append",
        "Inboxes one stored message went to.",
    )
});

/// Members a group message went to.
pub(crate) static GROUP_FAN_OUT: LazyLock<&'static ValueHistogram> =
    LazyLock::new(|| business::histogram("im_group_fan_out", "Members one group message went to."));

/// Long polls waiting for a message.
pub(crate) static POLLS_PARKED: LazyLock<&'static Gauge> = LazyLock::new(|| {
    business::gauge(
        "im_long_polls_parked",
        "Fetches waiting (long polls) for a message to arrive.",
    )
});

/// Counts a stored append of `recipients` inboxes.
pub(crate) fn appended(group: bool, recipients: usize) {
    let kind = if group { "group" } else { "direct" };
    if let Some(counter) = APPENDS.with(kind) {
        counter.inc();
    }
    RECIPIENTS.record(recipients as u64);
}

/// Registers every figure, so that each series exists (at zero) from startup.
pub(crate) fn register() {
    LazyLock::force(&APPENDS);
    LazyLock::force(&RECIPIENTS);
    LazyLock::force(&GROUP_FAN_OUT);
    LazyLock::force(&POLLS_PARKED);
}
