//! `svrkit doc`: the reference pages, their links, and how they look in a real browser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use svrkit_codegen::Builder;

/// Skips when a program from outside the Rust toolchain is missing (see the file).
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/src/external.rs"]
mod external;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docs(files: &[&str]) -> BTreeMap<String, String> {
    let mut b = Builder::new();
    b.emit_rerun_if_changed(false)
        .include_dir(repo().join("idl"))
        .base_dir(repo());
    // Relative to the repository (`base_dir`), so the pages name the files as `idl/...`.
    svrkit_cli::doc::render(b.check(files).unwrap().schema())
        .into_iter()
        .map(|f| (f.name, f.content))
        .collect()
}

#[test]
fn snapshot_of_the_hello_service() {
    let docs = docs(&["idl/hello/hello.xml"]);
    insta::assert_snapshot!("hello.md", docs["hello.md"]);
    insta::assert_snapshot!("index.md", docs["index.md"]);
    insta::assert_snapshot!("hello.html", docs["hello.html"]);
}

/// Every `href="page#anchor"` of every page names a page that exists and an `id` on it.
#[test]
fn every_link_lands_on_a_definition() {
    let all: Vec<String> = std::fs::read_dir(repo().join("idl/im"))
        .unwrap()
        .map(|e| format!("idl/im/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let docs = docs(&all);
    let ids: BTreeMap<&str, BTreeSet<String>> = docs
        .iter()
        .filter(|(name, _)| name.ends_with(".html"))
        .map(|(name, html)| (name.as_str(), attributes(html, "id=\"")))
        .collect();
    let mut links = 0;
    for (name, html) in docs.iter().filter(|(n, _)| n.ends_with(".html")) {
        for href in attributes(html, "href=\"") {
            let (page, anchor) = href.split_once('#').unwrap_or((&href, ""));
            let page = if page.is_empty() { name.as_str() } else { page };
            let targets = ids
                .get(page)
                .unwrap_or_else(|| panic!("{name}: link to a missing page {href}"));
            assert!(
                anchor.is_empty() || targets.contains(anchor),
                "{name}: link to a missing anchor {href}"
            );
            links += 1;
        }
    }
    assert!(links > 100, "only {links} distinct links");
    // A type of another package links to that package's page.
    assert!(docs["im.gateway.html"].contains("href=\"im.msg.html#Msg\""));
    // What uses a struct is listed with it.
    assert!(docs["im.common.html"].contains("Used by"));
}

fn attributes(html: &str, prefix: &str) -> BTreeSet<String> {
    html.split(prefix)
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .collect()
}

/// The Chromium that `.ci/run` installs (or one on the PATH); `None`, after a line saying
/// the test skipped, without one.
fn chromium() -> Option<String> {
    external::CHROMIUM.or_skip(external::runnable(&[
        "chromium",
        "chromium-browser",
        "google-chrome",
    ]))
}

/// Renders the pages in headless Chromium: the DOM has the tables, and a screenshot is
/// left in the target directory for a person to look at.
#[test]
fn the_pages_render_in_a_real_browser() {
    let Some(browser) = chromium() else {
        return;
    };
    let out = std::env::temp_dir().join(format!("svrkit-doc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let svrkit = Command::new(env!("CARGO_BIN_EXE_svrkit"))
        .current_dir(repo())
        .args([
            "doc",
            "idl/im/msg.xml",
            "idl/im/gateway.xml",
            "-I",
            "idl",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(svrkit.status.success(), "{svrkit:?}");
    let page = format!("file://{}/im.gateway.html", out.display());
    let headless = |args: &[&str]| {
        let o = Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", out.join("profile").display()))
            .args(args)
            .arg(&page)
            .output()
            .unwrap();
        assert!(o.status.success(), "{browser}: {o:?}");
        o
    };
    let dom = String::from_utf8(headless(&["--dump-dom"]).stdout).unwrap();
    assert!(
        dom.contains("<h1>Package <code>im.gateway</code></h1>"),
        "{dom}"
    );
    assert!(dom.contains("id=\"GatewaySvr.Send\""));
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("doc-im.gateway.png");
    headless(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,900",
    ]);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    std::fs::remove_dir_all(&out).unwrap();
}
