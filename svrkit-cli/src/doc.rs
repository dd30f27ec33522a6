//! The reference documentation of a schema, as HTML pages and Markdown files (`svrkit doc`).
//!
//! Another emitter over the checked IR, like the Rust and `.proto` ones: one page per package
//! (its services with each method's id, request, response, deadline, retry rule and priority;
//! its structs and enums with their docs) and an index, every type name a link to where it
//! is defined, and each struct and enum listing what uses it. The templates are in
//! `templates/doc/`.

use askama::Template;

use svrkit_codegen::GeneratedFile;
use svrkit_codegen::ir::{
    DefaultValue, FieldType, Item, Method, Package, PackageId, Retry, Schema, ValueType,
};
use svrkit_codegen::proto::enum_value_name;

/// Which of the two formats links are made for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Html,
    Markdown,
}

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Markdown => "md",
        }
    }
}

/// A piece of a type as shown: text, and where it links to if it names a type.
struct Segment {
    text: String,
    href: Option<String>,
}

/// A type as shown, like `map<string, UserRef>` with `UserRef` a link.
struct TypeView(Vec<Segment>);

impl TypeView {
    fn plain(text: impl Into<String>) -> TypeView {
        TypeView(vec![Segment {
            text: text.into(),
            href: None,
        }])
    }

    /// As Markdown: linked names as `[Name](href)`, the text between them in one code span.
    fn markdown(&self) -> String {
        let mut out = String::new();
        let mut plain = String::new();
        for s in &self.0 {
            match &s.href {
                None => plain.push_str(&s.text),
                Some(href) => {
                    if !plain.is_empty() {
                        out.push_str(&format!("`{}`", std::mem::take(&mut plain)));
                    }
                    out.push_str(&format!("[`{}`]({href})", s.text));
                }
            }
        }
        if !plain.is_empty() {
            out.push_str(&format!("`{plain}`"));
        }
        out
    }
}

struct PackageLink {
    name: String,
    href: String,
    summary: Option<Para>,
    services: usize,
    structs: usize,
    enums: usize,
}

struct ServiceView {
    name: String,
    /// The page of its package.
    page: String,
    full_name: String,
    id: u16,
    doc: Vec<Para>,
    methods: Vec<MethodView>,
}

struct MethodView {
    name: String,
    anchor: String,
    id: u16,
    request: TypeView,
    response: TypeView,
    timeout_ms: u32,
    retry: String,
    priority: &'static str,
    doc: Vec<Para>,
}

struct StructView {
    name: String,
    full_name: String,
    doc: Vec<Para>,
    fields: Vec<FieldView>,
    reserved: String,
    used_by: Vec<TypeView>,
}

struct FieldView {
    id: u32,
    name: String,
    ty: TypeView,
    default: String,
    doc: Vec<Para>,
}

struct EnumView {
    name: String,
    full_name: String,
    doc: Vec<Para>,
    values: Vec<ValueView>,
    reserved: String,
    used_by: Vec<TypeView>,
}

struct ValueView {
    name: String,
    json: String,
    number: i32,
    doc: Vec<Para>,
}

#[derive(Template)]
#[template(path = "doc/package.html")]
struct PackageHtml<'a> {
    page: &'a PackagePage,
    title: String,
}

#[derive(Template)]
#[template(path = "doc/package.md")]
struct PackageMd<'a> {
    page: &'a PackagePage,
}

#[derive(Template)]
#[template(path = "doc/index.html")]
struct IndexHtml<'a> {
    index: &'a IndexPage,
    title: String,
}

#[derive(Template)]
#[template(path = "doc/index.md")]
struct IndexMd<'a> {
    index: &'a IndexPage,
}

struct PackagePage {
    name: String,
    files: Vec<String>,
    doc: Vec<Para>,
    services: Vec<ServiceView>,
    structs: Vec<StructView>,
    enums: Vec<EnumView>,
    index_href: String,
}

struct IndexPage {
    packages: Vec<PackageLink>,
    services: Vec<ServiceView>,
}

/// Renders the documentation of every package: `index.html`, `<package>.html`, and the same
/// as `.md` (the index's `package` is empty).
pub fn render(schema: &Schema) -> Vec<GeneratedFile> {
    let mut files = Vec::new();
    for format in [Format::Html, Format::Markdown] {
        let index = Site {
            schema,
            format,
            current: None,
        }
        .index();
        files.push(GeneratedFile {
            package: String::new(),
            name: format!("index.{}", format.ext()),
            content: match format {
                Format::Html => IndexHtml {
                    index: &index,
                    title: "IDL reference".into(),
                }
                .render(),
                Format::Markdown => IndexMd { index: &index }.render(),
            }
            .expect("doc templates render"),
        });
        for i in 0..schema.packages.len() {
            let site = Site {
                schema,
                format,
                current: Some(PackageId(i)),
            };
            let page = site.package(PackageId(i));
            files.push(GeneratedFile {
                package: page.name.clone(),
                name: format!("{}.{}", page.name, format.ext()),
                content: match format {
                    Format::Html => PackageHtml {
                        title: format!("{} — IDL reference", page.name),
                        page: &page,
                    }
                    .render(),
                    Format::Markdown => PackageMd { page: &page }.render(),
                }
                .expect("doc templates render"),
            });
        }
    }
    files
}

struct Site<'s> {
    schema: &'s Schema,
    format: Format,
    /// The package whose page is being made: its types are named bare.
    current: Option<PackageId>,
}

impl Site<'_> {
    fn index(&self) -> IndexPage {
        let packages = self
            .schema
            .packages
            .iter()
            .map(|p| {
                let count = |f: fn(&Item) -> bool| p.items.iter().filter(|i| f(i)).count();
                PackageLink {
                    name: p.name.clone(),
                    href: format!("{}.{}", p.name, self.format.ext()),
                    summary: self.package_doc(p).into_iter().next(),
                    services: count(|i| matches!(i, Item::Service(_))),
                    structs: count(|i| matches!(i, Item::Struct(_))),
                    enums: count(|i| matches!(i, Item::Enum(_))),
                }
            })
            .collect();
        let services = self
            .schema
            .services
            .iter()
            .map(|s| self.service(s))
            .collect();
        IndexPage { packages, services }
    }

    fn package(&self, id: PackageId) -> PackagePage {
        let p = self.schema.package(id);
        let mut page = PackagePage {
            name: p.name.clone(),
            files: p.files.clone(),
            doc: self.package_doc(p),
            services: Vec::new(),
            structs: Vec::new(),
            enums: Vec::new(),
            index_href: format!("index.{}", self.format.ext()),
        };
        for item in &p.items {
            match *item {
                Item::Service(i) => page.services.push(self.service(&self.schema.services[i])),
                Item::Struct(s) => page.structs.push(self.struct_(s)),
                Item::Enum(e) => page.enums.push(self.enum_(e)),
            }
        }
        page
    }

    fn service(&self, s: &svrkit_codegen::ir::Service) -> ServiceView {
        ServiceView {
            name: s.name.clone(),
            page: format!(
                "{}.{}",
                self.schema.package(s.package).name,
                self.format.ext()
            ),
            full_name: s.full_name.clone(),
            id: s.id,
            doc: self.paragraphs(s.doc.as_deref()),
            methods: s.methods.iter().map(|m| self.method(&s.name, m)).collect(),
        }
    }

    fn method(&self, service: &str, m: &Method) -> MethodView {
        MethodView {
            name: m.name.clone(),
            anchor: format!("{service}.{}", m.name),
            id: m.id,
            request: self.value_type(ValueType::Struct(m.request)),
            response: m.response.map_or_else(
                || TypeView::plain("none (oneway)"),
                |r| self.value_type(ValueType::Struct(r)),
            ),
            timeout_ms: m.timeout_ms,
            retry: match m.retry {
                Retry::None => "no".into(),
                Retry::Idempotent { max_attempts } => {
                    format!("idempotent, {max_attempts} attempts")
                }
            },
            priority: m.priority.name(),
            doc: self.paragraphs(m.doc.as_deref()),
        }
    }

    fn struct_(&self, id: svrkit_codegen::ir::StructId) -> StructView {
        let s = self.schema.struct_(id);
        StructView {
            name: s.name.clone(),
            full_name: s.full_name.clone(),
            doc: self.paragraphs(s.doc.as_deref()),
            fields: s
                .fields
                .iter()
                .map(|f| FieldView {
                    id: f.id,
                    name: f.name.clone(),
                    ty: self.field_type(f.ty),
                    default: f
                        .default
                        .as_ref()
                        .map(|d| match self.format {
                            Format::Markdown => markdown_code(&show_default(d)),
                            Format::Html => show_default(d),
                        })
                        .unwrap_or_default(),
                    doc: self.paragraphs(f.doc.as_deref()),
                })
                .collect(),
            reserved: reserved(&s.reserved),
            used_by: self.used_by(ValueType::Struct(id)),
        }
    }

    fn enum_(&self, id: svrkit_codegen::ir::EnumId) -> EnumView {
        let e = self.schema.enum_(id);
        EnumView {
            name: e.name.clone(),
            full_name: e.full_name.clone(),
            doc: self.paragraphs(e.doc.as_deref()),
            values: e
                .values
                .iter()
                .map(|v| ValueView {
                    name: v.name.clone(),
                    json: enum_value_name(&e.name, &v.name),
                    number: v.number,
                    doc: self.paragraphs(v.doc.as_deref()),
                })
                .collect(),
            reserved: reserved(&e.reserved),
            used_by: self.used_by(ValueType::Enum(id)),
        }
    }

    /// The methods and struct fields that use `ty`, each a link.
    fn used_by(&self, ty: ValueType) -> Vec<TypeView> {
        let mut out = Vec::new();
        for s in &self.schema.services {
            for m in &s.methods {
                let uses = ValueType::Struct(m.request) == ty
                    || m.response.is_some_and(|r| ValueType::Struct(r) == ty);
                if uses {
                    let p = self.schema.package(s.package);
                    out.push(TypeView(vec![Segment {
                        text: format!("{}.{}", s.name, m.name),
                        href: Some(self.href(&p.name, &format!("{}.{}", s.name, m.name))),
                    }]));
                }
            }
        }
        for s in &self.schema.structs {
            for f in &s.fields {
                // Map keys are scalars, so only the value type can name a struct or enum.
                if f.ty.value() == ty {
                    let p = self.schema.package(s.package);
                    out.push(TypeView(vec![Segment {
                        text: format!("{}.{}", s.name, f.name),
                        href: Some(self.href(&p.name, &s.name)),
                    }]));
                }
            }
        }
        out
    }

    fn field_type(&self, ty: FieldType) -> TypeView {
        let mut segments = Vec::new();
        let text = |s: &str| Segment {
            text: s.to_owned(),
            href: None,
        };
        match ty {
            FieldType::Singular(v) => segments.extend(self.value_type(v).0),
            FieldType::Optional(v) => {
                segments.push(text("optional "));
                segments.extend(self.value_type(v).0);
            }
            FieldType::Repeated(v) => {
                segments.push(text("repeated "));
                segments.extend(self.value_type(v).0);
            }
            FieldType::Map(k, v) => {
                segments.push(text(&format!("map<{}, ", k.name())));
                segments.extend(self.value_type(v).0);
                segments.push(text(">"));
            }
        }
        TypeView(segments)
    }

    fn value_type(&self, ty: ValueType) -> TypeView {
        let (package, name) = match ty {
            ValueType::Scalar(s) => return TypeView::plain(s.name()),
            ValueType::Struct(id) => {
                let s = self.schema.struct_(id);
                (s.package, &s.name)
            }
            ValueType::Enum(id) => {
                let e = self.schema.enum_(id);
                (e.package, &e.name)
            }
        };
        let p = &self.schema.package(package).name;
        TypeView(vec![Segment {
            text: if self.current == Some(package) {
                name.clone()
            } else {
                self.schema.type_name(ty)
            },
            href: Some(self.href(p, name)),
        }])
    }

    /// Doc text as paragraphs, with its `code` spans told apart.
    fn paragraphs(&self, doc: Option<&str>) -> Vec<Para> {
        paragraphs(doc).iter().map(|p| Para::parse(p)).collect()
    }

    /// A package's doc: the `<doc>` of its files, in file order.
    fn package_doc(&self, p: &Package) -> Vec<Para> {
        p.doc
            .iter()
            .flat_map(|d| self.paragraphs(Some(d)))
            .collect()
    }

    fn href(&self, package: &str, anchor: &str) -> String {
        format!("{package}.{}#{anchor}", self.format.ext())
    }
}

/// A paragraph of doc text: runs of text, those in backticks marked as code (Markdown
/// keeps the text as it is, one run).
struct Para(Vec<Span>);

struct Span {
    code: bool,
    text: String,
}

impl Para {
    fn parse(text: &str) -> Para {
        let mut spans = Vec::new();
        // Odd pieces are between backticks; an unmatched backtick stays text.
        let pieces: Vec<&str> = text.split('`').collect();
        let paired = pieces.len() % 2 == 1;
        for (i, piece) in pieces.iter().enumerate() {
            let code = paired && i % 2 == 1;
            let text = if paired || i == 0 {
                (*piece).to_owned()
            } else {
                format!("`{piece}")
            };
            if !text.is_empty() {
                spans.push(Span { code, text });
            }
        }
        Para(spans)
    }
}

impl Para {
    /// As Markdown in a table cell, where `|` would end the cell (even inside code).
    fn cell(&self) -> String {
        self.markdown(true)
    }

    /// As Markdown: text escaped so that it shows as written (`<`, `&`, `\\` and the
    /// characters that would start emphasis or links; `_` only works between words in GFM, so
    /// `snake_case` is left readable), code spans as they are.
    fn markdown(&self, in_table: bool) -> String {
        let mut out = String::new();
        for s in &self.0 {
            if s.code {
                let text = if in_table {
                    s.text.replace('|', "\\|")
                } else {
                    s.text.clone()
                };
                out.push('`');
                out.push_str(&text);
                out.push('`');
                continue;
            }
            for c in s.text.chars() {
                match c {
                    '&' => out.push_str("&amp;"),
                    '<' => out.push_str("&lt;"),
                    '>' => out.push_str("&gt;"),
                    '|' if in_table => out.push_str("\\|"),
                    '\\' | '*' | '[' | ']' => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
        }
        out
    }
}

impl std::fmt::Display for Para {
    /// The paragraph as Markdown, outside a table.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.markdown(false))
    }
}

/// Doc text as paragraphs (split at blank lines, lines joined).
fn paragraphs(doc: Option<&str>) -> Vec<String> {
    let Some(doc) = doc else { return Vec::new() };
    doc.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// A Markdown code span holding `text` in a table cell: fenced with more backticks than it
/// holds in a row, `|` escaped (GitHub splits table cells before it reads code spans).
fn markdown_code(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", text.replace('|', "\\|"))
}

fn show_default(d: &DefaultValue) -> String {
    match d {
        DefaultValue::Bool(b) => b.to_string(),
        DefaultValue::Int(i) => i.to_string(),
        DefaultValue::Uint(u) => u.to_string(),
        DefaultValue::Float(f) => f.to_string(),
        DefaultValue::String(s) => format!("{s:?}"),
        DefaultValue::Bytes(b) => format!("{:?}", String::from_utf8_lossy(b)),
        DefaultValue::Enum { name, .. } => name.clone(),
    }
}

fn reserved(r: &svrkit_codegen::ir::Reserved) -> String {
    let mut parts: Vec<String> = r
        .ids
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    parts.extend(r.names.iter().map(|n| format!("`{n}`")));
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::Para;

    #[test]
    fn markdown_shows_doc_text_as_written() {
        let p = Para::parse(r"a | b `x|y<z>` <i> &lt; \ *not* [link] snake_case");
        assert_eq!(
            p.cell(),
            r"a \| b `x\|y<z>` &lt;i&gt; &amp;lt; \\ \*not\* \[link\] snake_case"
        );
        assert_eq!(
            p.to_string(),
            r"a | b `x|y<z>` &lt;i&gt; &amp;lt; \\ \*not\* \[link\] snake_case"
        );
        // An unmatched backtick is text.
        assert_eq!(Para::parse("a ` b").to_string(), "a ` b");
    }
}
