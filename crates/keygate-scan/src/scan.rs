//! The scanner: dispatches bytes by kind (text, archive, dex, binary XML, resource table,
//! plist, executable), runs the matcher and the managed-secret fingerprints, and collects
//! findings and warnings. Thread-safe: one `Scanner` serves every worker.

use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::finding::{CommitInfo, Finding, display_path, fingerprint, mask};
use crate::fingerprints::{Fingerprints, leak_message};
use crate::formats::{self, Kind};
use crate::matcher::Matcher;
use crate::rules::Severity;

/// Paths listed here (gitignore syntax) are not scanned: test fixtures, rule files.
pub const IGNORE_FILE: &str = ".keygateignore";

/// Inline marker that suppresses findings on its line.
pub const ALLOW_MARKER: &[u8] = b"keygate:allow";

/// Where a buffer starts in its file: lines before it, and bytes of its first line
/// that came before it.
#[derive(Debug, Clone, Copy, Default)]
struct TextPos {
    line: usize,
    column: usize,
}

/// How far from a finding, on its line, a `keygate:allow` marker is honoured.
const ALLOW_REACH: usize = 4096;

/// Resource limits; the defaults bound memory to a few hundred MiB per worker.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Archives nested deeper than this are skipped (an APK inside a ZIP is depth 2).
    pub max_depth: usize,
    /// Largest archive member read into memory, decompressed.
    pub max_entry_bytes: u64,
    /// Decompressed bytes read from one top-level archive, all members together.
    pub max_archive_bytes: u64,
    /// Members that expand more than this ratio (and past 1 MiB) are zip-bomb suspects.
    pub max_ratio: u64,
    /// Members per archive.
    pub max_entries: usize,
    /// Plain files are scanned in chunks of this size.
    pub chunk_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: 4,
            max_entry_bytes: 256 << 20,
            max_archive_bytes: 2 << 30,
            max_ratio: 200,
            max_entries: 100_000,
            chunk_bytes: 8 << 20,
        }
    }
}

/// Overlap kept between chunks of a large file; longer than any rule's reach.
const OVERLAP: usize = 64 << 10;
const MEDIA_EXTENSIONS: &[&str] = &[
    ".png", ".jpg", ".jpeg", ".gif", ".webp", ".ttf", ".otf", ".woff", ".woff2", ".mp3", ".mp4",
    ".ogg", ".wav", ".m4a", ".car", ".nib",
];

/// A problem that made the scanner skip something; the scan goes on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

/// Where bytes came from.
#[derive(Debug, Clone)]
pub struct Origin {
    pub path: String,
    pub commit: Option<Arc<CommitInfo>>,
}

impl Origin {
    pub fn new(path: impl Into<String>) -> Origin {
        Origin {
            path: display_path(&path.into()),
            commit: None,
        }
    }

    fn member(&self, name: &str) -> Origin {
        Origin {
            path: format!("{}!{}", self.path, display_path(name)),
            commit: self.commit.clone(),
        }
    }
}

/// Collects results from all workers.
#[derive(Debug, Default)]
pub struct Collector {
    findings: Mutex<Vec<Finding>>,
    warnings: Mutex<Vec<Warning>>,
    pub bytes: AtomicU64,
    pub files: AtomicU64,
    pub skipped_binary: AtomicU64,
}

impl Collector {
    pub fn warn(&self, path: &str, message: impl Into<String>) {
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Warning {
                path: path.to_string(),
                message: message.into(),
            });
    }

    fn add(&self, mut f: Vec<Finding>) {
        if !f.is_empty() {
            self.findings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .append(&mut f);
        }
    }

    /// Moves another collector's results in, keeping the findings `keep` accepts.
    pub fn absorb(&self, other: Collector, keep: impl Fn(&Finding) -> bool) {
        self.bytes
            .fetch_add(other.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        self.files
            .fetch_add(other.files.load(Ordering::Relaxed), Ordering::Relaxed);
        self.skipped_binary.fetch_add(
            other.skipped_binary.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let (findings, warnings) = other.finish();
        self.add(findings.into_iter().filter(|f| keep(f)).collect());
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(warnings);
    }

    /// Findings sorted by path and position, duplicates removed; then the warnings.
    pub fn finish(self) -> (Vec<Finding>, Vec<Warning>) {
        let mut findings = self
            .findings
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        findings.sort_by(|a, b| {
            (&a.path, a.line, a.column, &a.rule_id, &a.fingerprint).cmp(&(
                &b.path,
                b.line,
                b.column,
                &b.rule_id,
                &b.fingerprint,
            ))
        });
        findings.dedup_by(|a, b| {
            a.path == b.path
                && a.line == b.line
                && a.rule_id == b.rule_id
                && a.fingerprint == b.fingerprint
                && a.commit == b.commit
        });
        // In history, one secret in one file shows up in every later version of that
        // file: report it once, at the commit that introduced it (earliest date).
        let mut first: std::collections::HashMap<(String, String, String), usize> =
            std::collections::HashMap::new();
        let mut keep = vec![true; findings.len()];
        for (i, f) in findings.iter().enumerate() {
            let Some(c) = &f.commit else { continue };
            let key = (f.path.clone(), f.rule_id.clone(), f.fingerprint.clone());
            match first.get(&key).copied() {
                None => {
                    first.insert(key, i);
                }
                Some(j) => {
                    let earlier = findings
                        .get(j)
                        .and_then(|g| g.commit.as_ref())
                        .is_some_and(|gc| (&gc.date, &gc.commit) <= (&c.date, &c.commit));
                    let drop = if earlier { i } else { j };
                    if let Some(k) = keep.get_mut(drop) {
                        *k = false;
                    }
                    if !earlier {
                        first.insert(key, i);
                    }
                }
            }
        }
        let mut findings: Vec<Finding> = findings
            .into_iter()
            .zip(keep)
            .filter_map(|(f, k)| k.then_some(f))
            .collect();
        findings.sort_by(|a, b| {
            (&a.path, a.line, a.column, &a.rule_id).cmp(&(&b.path, b.line, b.column, &b.rule_id))
        });
        let mut warnings = self
            .warnings
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        warnings.sort_by(|a, b| a.path.cmp(&b.path));
        (findings, warnings)
    }

    pub fn findings_so_far(&self) -> usize {
        self.findings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[derive(Debug)]
pub struct Scanner {
    matcher: Matcher,
    fingerprints: Option<Fingerprints>,
    limits: Limits,
}

impl Scanner {
    pub fn new(matcher: Matcher, fingerprints: Option<Fingerprints>, limits: Limits) -> Scanner {
        Scanner {
            matcher,
            fingerprints,
            limits,
        }
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Scans files and directories; directories are walked in parallel, honouring
    /// `.gitignore`, `.ignore` and git's exclude files, and skipping `.git`.
    pub fn scan_paths(&self, paths: &[PathBuf], sink: &Collector) {
        let mut dirs = Vec::new();
        for p in paths {
            match std::fs::metadata(p) {
                Ok(m) if m.is_dir() => dirs.push(p.clone()),
                Ok(_) => self.scan_file_parallel(p, &clean(p), sink),
                Err(e) => sink.warn(&clean(p), format!("cannot read: {e}")),
            }
        }
        let Some((first, rest)) = dirs.split_first() else {
            return;
        };
        let mut builder = ignore::WalkBuilder::new(first);
        for d in rest {
            builder.add(d);
        }
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        builder
            .hidden(false)
            .git_ignore(true)
            .git_exclude(true)
            .git_global(false)
            .add_custom_ignore_filename(IGNORE_FILE)
            .require_git(false)
            .threads(threads)
            .filter_entry(|e| e.file_name() != ".git");
        builder.build_parallel().run(|| {
            Box::new(move |entry| {
                match entry {
                    Ok(e) => {
                        if e.file_type().is_some_and(|t| t.is_file()) {
                            self.scan_file(e.path(), &clean(e.path()), sink);
                        }
                    }
                    Err(err) => sink.warn("", format!("walk: {err}")),
                }
                ignore::WalkState::Continue
            })
        });
    }

    /// Scans one file from disk without loading more than a chunk of it at a time
    /// (archives are read member by member).
    pub fn scan_file(&self, path: &Path, display: &str, sink: &Collector) {
        self.scan_file_inner(path, display, sink, false);
    }

    /// Like [`Scanner::scan_file`], but the members of a top-level archive are scanned
    /// by all cores (for a single APK or IPA given on the command line).
    pub fn scan_file_parallel(&self, path: &Path, display: &str, sink: &Collector) {
        self.scan_file_inner(path, display, sink, true);
    }

    fn scan_file_inner(&self, path: &Path, display: &str, sink: &Collector, parallel: bool) {
        let origin = Origin::new(display);
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) => return sink.warn(&origin.path, format!("cannot open: {e}")),
        };
        let mut head = Vec::with_capacity(8192);
        if let Err(e) = (&mut file).take(8192).read_to_end(&mut head) {
            return sink.warn(&origin.path, format!("cannot read: {e}"));
        }
        sink.files.fetch_add(1, Ordering::Relaxed);
        let kind = formats::sniff(&head);
        match kind {
            Kind::Text if formats::plist::is_xml_plist(&head) => {
                let mut data = head;
                let limit = self.limits.max_entry_bytes;
                if let Err(e) = file.take(limit).read_to_end(&mut data) {
                    return sink.warn(&origin.path, format!("cannot read: {e}"));
                }
                let budget = AtomicU64::new(self.limits.max_archive_bytes);
                self.scan_blob(&data, &origin, 0, &budget, sink);
            }
            Kind::Text => {
                let reader = Cursor::new(head).chain(file);
                self.scan_text_reader(reader, &origin, sink);
            }
            Kind::Zip => {
                if let Err(e) = file.rewind() {
                    return sink.warn(&origin.path, format!("cannot read: {e}"));
                }
                let budget = AtomicU64::new(self.limits.max_archive_bytes);
                self.scan_zip(BufReader::new(file), &origin, 1, &budget, sink, parallel);
            }
            Kind::Executable | Kind::OtherBinary => {
                sink.skipped_binary.fetch_add(1, Ordering::Relaxed);
            }
            Kind::Dex | Kind::BinaryXml | Kind::ResourceTable | Kind::BinaryPlist => {
                let mut data = head;
                let limit = self.limits.max_entry_bytes;
                if let Err(e) = file.take(limit).read_to_end(&mut data) {
                    return sink.warn(&origin.path, format!("cannot read: {e}"));
                }
                let budget = AtomicU64::new(self.limits.max_archive_bytes);
                self.scan_blob(&data, &origin, 0, &budget, sink);
            }
        }
    }

    /// Scans bytes already in memory: an archive member or a git blob.
    pub fn scan_bytes(&self, data: &[u8], origin: &Origin, sink: &Collector) {
        let budget = AtomicU64::new(self.limits.max_archive_bytes);
        sink.files.fetch_add(1, Ordering::Relaxed);
        self.scan_blob(data, origin, 0, &budget, sink);
    }

    fn scan_blob(
        &self,
        data: &[u8],
        origin: &Origin,
        depth: usize,
        budget: &AtomicU64,
        sink: &Collector,
    ) {
        let kind = formats::sniff(data);
        let parsed = match kind {
            Kind::Text => {
                sink.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                let paired = formats::plist::xml_plist_with_pairs(data);
                let text = paired.as_deref().unwrap_or(data);
                let f = self.scan_text(text, origin, TextPos::default(), usize::MAX, true);
                return sink.add(f);
            }
            Kind::Zip => {
                if depth >= self.limits.max_depth {
                    return sink.warn(&origin.path, "archive nested too deep, skipped");
                }
                return self.scan_zip(Cursor::new(data), origin, depth + 1, budget, sink, false);
            }
            Kind::Dex => formats::dex::strings(data),
            Kind::BinaryXml => formats::axml::binary_xml_text(data),
            Kind::ResourceTable => formats::axml::resource_table_text(data),
            Kind::BinaryPlist => formats::plist::binary_plist_text(data),
            Kind::Executable => Ok(formats::strings::printable(data, 6)),
            Kind::OtherBinary => {
                let lower = origin.path.to_ascii_lowercase();
                let media = MEDIA_EXTENSIONS.iter().any(|e| lower.ends_with(e));
                if depth == 0 || media {
                    sink.skipped_binary.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // Inside packages: protobuf manifests (AAB), Hermes bundles, other
                // libraries. Their printable strings are worth a look.
                Ok(formats::strings::printable(data, 6))
            }
        };
        match parsed {
            Ok(text) => {
                sink.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                let f = self.scan_text(&text, origin, TextPos::default(), usize::MAX, false);
                sink.add(f);
            }
            Err(e) => sink.warn(&origin.path, format!("{e}; skipped")),
        }
    }

    fn scan_zip<R: Read + Seek>(
        &self,
        reader: R,
        origin: &Origin,
        depth: usize,
        budget: &AtomicU64,
        sink: &Collector,
        parallel: bool,
    ) {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        if parallel && threads > 1 {
            // Decompression stays on this thread; scanning goes to the workers. The
            // channel is small so few members are held in memory at once.
            let (tx, rx) = std::sync::mpsc::sync_channel::<(Origin, Vec<u8>)>(threads);
            let rx = Mutex::new(rx);
            std::thread::scope(|s| {
                for _ in 0..threads {
                    let rx = &rx;
                    s.spawn(move || {
                        loop {
                            let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                            let Ok((child, data)) = job else { break };
                            self.scan_blob(&data, &child, depth, budget, sink);
                        }
                    });
                }
                self.read_members(reader, origin, budget, sink, |child, data| {
                    tx.send((child, data)).is_ok()
                });
                drop(tx);
            });
        } else {
            self.read_members(reader, origin, budget, sink, |child, data| {
                self.scan_blob(&data, &child, depth, budget, sink);
                true
            });
        }
    }

    /// Reads each member within the limits and hands it to `each`; stops when `each`
    /// returns false.
    fn read_members<R: Read + Seek>(
        &self,
        reader: R,
        origin: &Origin,
        budget: &AtomicU64,
        sink: &Collector,
        mut each: impl FnMut(Origin, Vec<u8>) -> bool,
    ) {
        let mut zip = match zip::ZipArchive::new(reader) {
            Ok(z) => z,
            Err(e) => return sink.warn(&origin.path, format!("corrupt archive: {e}; skipped")),
        };
        if zip.len() > self.limits.max_entries {
            return sink.warn(
                &origin.path,
                format!(
                    "archive has {} members, over the limit of {}; skipped",
                    zip.len(),
                    self.limits.max_entries
                ),
            );
        }
        for i in 0..zip.len() {
            let mut member = match zip.by_index(i) {
                Ok(m) => m,
                Err(e) => {
                    sink.warn(&origin.path, format!("member {i}: {e}; skipped"));
                    continue;
                }
            };
            if member.is_dir() {
                continue;
            }
            let child = origin.member(member.name());
            let declared = member.size();
            let compressed = member.compressed_size().max(1);
            if declared > self.limits.max_entry_bytes {
                sink.warn(
                    &child.path,
                    format!("member of {declared} bytes is over the size limit; skipped"),
                );
                continue;
            }
            if declared > (1 << 20) && declared / compressed > self.limits.max_ratio {
                sink.warn(
                    &child.path,
                    format!(
                        "compression ratio over {}:1, possible zip bomb; skipped",
                        self.limits.max_ratio
                    ),
                );
                continue;
            }
            let left = budget.load(Ordering::Relaxed);
            if declared > left {
                sink.warn(
                    &child.path,
                    "archive expands past the total size limit; rest skipped",
                );
                return;
            }
            // The declared size may lie: never read more than the limits allow.
            let cap = self.limits.max_entry_bytes.min(left);
            let mut data = Vec::with_capacity(usize::try_from(declared.min(cap)).unwrap_or(0));
            let read = (&mut member)
                .take(cap.saturating_add(1))
                .read_to_end(&mut data);
            if let Err(e) = read {
                sink.warn(&child.path, format!("cannot decompress: {e}; skipped"));
                continue;
            }
            let n = data.len() as u64;
            if n > cap {
                sink.warn(
                    &child.path,
                    "member expands past the size limit, possible zip bomb; skipped",
                );
                take_budget(budget, n);
                continue;
            }
            take_budget(budget, n);
            sink.files.fetch_add(1, Ordering::Relaxed);
            drop(member);
            if !each(child, data) {
                return;
            }
        }
    }

    fn scan_text_reader<R: Read>(&self, mut reader: R, origin: &Origin, sink: &Collector) {
        let chunk = self.limits.chunk_bytes.max(OVERLAP * 2);
        let mut buf: Vec<u8> = Vec::new();
        let mut pos = TextPos::default();
        loop {
            let before = buf.len();
            let want = (chunk - before.min(chunk)) as u64;
            if let Err(e) = (&mut reader).take(want).read_to_end(&mut buf) {
                sink.warn(&origin.path, format!("read error: {e}; rest skipped"));
                let f = self.scan_text(&buf, origin, pos, usize::MAX, true);
                return sink.add(f);
            }
            let got = buf.len() - before;
            sink.bytes.fetch_add(got as u64, Ordering::Relaxed);
            let last = buf.len() < chunk;
            if last {
                let f = self.scan_text(&buf, origin, pos, usize::MAX, true);
                return sink.add(f);
            }
            // Report matches starting before the overlap; the next round sees the rest.
            let limit = buf.len() - OVERLAP;
            let f = self.scan_text(&buf, origin, pos, limit, true);
            sink.add(f);
            let dropped = buf.get(..limit).unwrap_or(&[]);
            pos.line += memchr::memchr_iter(b'\n', dropped).count();
            pos.column = match memchr::memrchr(b'\n', dropped) {
                Some(p) => dropped.len() - p - 1,
                None => pos.column + dropped.len(),
            };
            buf.drain(..limit);
        }
    }

    /// Runs rules and fingerprints over text. Only matches starting before `limit`
    /// are reported. `lines` says whether line numbers mean anything here.
    fn scan_text(
        &self,
        text: &[u8],
        origin: &Origin,
        base: TextPos,
        limit: usize,
        lines: bool,
    ) -> Vec<Finding> {
        struct Hit {
            start: usize,
            end: usize,
            managed: bool,
            finding: Finding,
        }
        let mut hits: Vec<Hit> = Vec::new();
        for m in self.matcher.find(text) {
            if m.start >= limit {
                continue;
            }
            let Some(rule) = self.matcher.rules().get(m.rule) else {
                continue;
            };
            let secret = text.get(m.secret_start..m.secret_end).unwrap_or(&[]);
            hits.push(Hit {
                start: m.secret_start,
                end: m.secret_end,
                managed: false,
                finding: Finding {
                    rule_id: rule.id().to_string(),
                    rule_name: rule.name().to_string(),
                    severity: rule.severity(),
                    path: origin.path.clone(),
                    line: None,
                    column: None,
                    masked: mask(secret),
                    fingerprint: fingerprint(rule.id(), secret),
                    message: format!("{} found", rule.name()),
                    commit: origin.commit.as_deref().cloned(),
                },
            });
        }
        if let Some(fp) = &self.fingerprints {
            for m in fp.find(text) {
                if m.start >= limit {
                    continue;
                }
                hits.push(Hit {
                    start: m.start,
                    end: m.end,
                    managed: true,
                    finding: Finding {
                        rule_id: "managed-secret".to_string(),
                        rule_name: format!("keygate managed secret {}", m.secret.name),
                        severity: Severity::High,
                        path: origin.path.clone(),
                        line: None,
                        column: None,
                        // Never the value, not even masked: it is a live managed secret.
                        masked: format!("<{} v{}>", m.secret.name, m.secret.version),
                        fingerprint: format!("hmac:{}", m.fingerprint_hex),
                        message: leak_message(&m.secret),
                        commit: origin.commit.as_deref().cloned(),
                    },
                });
            }
        }
        if hits.is_empty() {
            return Vec::new();
        }
        // A managed secret says more (which one, how to rotate) than the provider rule
        // that also matches it: keep only the managed finding for that span.
        let managed: Vec<(usize, usize)> = hits
            .iter()
            .filter(|h| h.managed)
            .map(|h| (h.start, h.end))
            .collect();
        if !managed.is_empty() {
            hits.retain(|h| h.managed || !managed.iter().any(|&(s, e)| h.start < e && s < h.end));
        }
        hits.sort_by_key(|h| h.start);
        let mut out = Vec::with_capacity(hits.len());
        let mut line = base.line + 1;
        let mut line_start = 0usize;
        let mut pos = 0usize;
        for mut h in hits {
            let start = h.start.min(text.len());
            // Advance line and line start incrementally: linear in the text overall.
            if start >= pos {
                let seg = text.get(pos..start).unwrap_or(&[]);
                line += memchr::memchr_iter(b'\n', seg).count();
                if let Some(p) = memchr::memrchr(b'\n', seg) {
                    line_start = pos + p + 1;
                }
                pos = start;
            }
            // The allow marker is looked for on the line, but within a bounded distance
            // on very long (minified) lines.
            let lo = line_start.max(start.saturating_sub(ALLOW_REACH));
            let hi = start.saturating_add(ALLOW_REACH).min(text.len());
            let le =
                memchr::memchr(b'\n', text.get(start..hi).unwrap_or(&[])).map_or(hi, |p| start + p);
            let line_text = text.get(lo..le).unwrap_or(&[]);
            if memchr::memmem::find(line_text, ALLOW_MARKER).is_some() {
                continue;
            }
            if lines {
                h.finding.line = Some(line);
                // On the buffer's first line, the line began in an earlier chunk.
                let before = if line == base.line + 1 {
                    base.column
                } else {
                    0
                };
                h.finding.column = Some(before + start - line_start + 1);
            }
            out.push(h.finding);
        }
        out
    }
}

fn take_budget(budget: &AtomicU64, n: u64) {
    let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
        Some(b.saturating_sub(n))
    });
}

fn clean(p: &Path) -> String {
    let s = p.to_string_lossy();
    let s = s.strip_prefix("./").unwrap_or(&s);
    display_path(s)
}
