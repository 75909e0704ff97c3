//! A strict parser of the Prometheus text exposition format (version 0.0.4), shared by the
//! tests of the config service's `/metrics` and of the SDK's metrics. Included with
//! `#[path = ...] mod promtext;` where needed (not from `common/mod.rs`, so other test binaries
//! do not compile it).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    /// (sample name, labels) → value.
    pub samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

fn valid_metric_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn valid_label_name(n: &str) -> bool {
    let mut b = n.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !n.starts_with("__")
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y"}` (with `\\`, `\"`, `\n` escapes) → labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((labels, s));
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let (name, r) = rest.split_once("=\"").ok_or("label without =\"")?;
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        let mut value = String::new();
        let mut chars = r.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} repeated"));
        }
        rest = &r[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            )
        {
            return base;
        }
    }
    name
}

pub fn parse_exposition(text: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut fams: BTreeMap<String, Family> = BTreeMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut done: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    for (no, line) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {line:?}", no + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            let mut parts = c.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| err("HELP without name".into()))?;
                    if !valid_metric_name(name) {
                        return Err(err("bad metric name".into()));
                    }
                    let f = fams.entry(name.to_string()).or_default();
                    if f.help.is_some() {
                        return Err(err("second HELP".into()));
                    }
                    let raw = parts.next().unwrap_or("");
                    let mut help = String::new();
                    let mut it = raw.chars();
                    while let Some(ch) = it.next() {
                        if ch == '\\' {
                            match it.next() {
                                Some('\\') => help.push('\\'),
                                Some('n') => help.push('\n'),
                                o => return Err(err(format!("bad escape in HELP {o:?}"))),
                            }
                        } else {
                            help.push(ch);
                        }
                    }
                    f.help = Some(help);
                }
                Some("TYPE") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| err("TYPE without name".into()))?;
                    let kind = parts
                        .next()
                        .ok_or_else(|| err("TYPE without type".into()))?;
                    if !valid_metric_name(name) {
                        return Err(err("bad metric name".into()));
                    }
                    if !matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(err(format!("unknown type {kind}")));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(err("second TYPE".into()));
                    }
                    let f = fams.entry(name.to_string()).or_default();
                    if !f.samples.is_empty() {
                        return Err(err("TYPE after samples".into()));
                    }
                    f.kind = kind.to_string();
                }
                _ => {} // a comment
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("sample without value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(err("bad metric name".into()));
        }
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(err)?;
        let mut fields = rest.trim_start_matches(' ').split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(err)?;
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(err("bad timestamp".into()));
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let fam = family_of(name, &types).to_string();
        if current.as_deref() != Some(fam.as_str()) {
            if done.contains(&fam) {
                return Err(err(format!("samples of {fam} are not contiguous")));
            }
            if let Some(c) = current.take() {
                done.push(c);
            }
            current = Some(fam.clone());
        }
        let f = fams.entry(fam.clone()).or_default();
        if f.kind.is_empty() {
            f.kind = "untyped".into();
        }
        if f.kind == "histogram" && name.ends_with("_bucket") && !labels.contains_key("le") {
            return Err(err("bucket without le".into()));
        }
        if f.kind == "counter" && (value < 0.0 || value.is_nan()) {
            return Err(err("negative counter".into()));
        }
        if f.samples
            .insert((name.to_string(), labels), value)
            .is_some()
        {
            return Err(err("duplicate series".into()));
        }
    }
    // Histograms: cumulative buckets, +Inf bucket equal to _count, a _sum.
    for (name, f) in &fams {
        if f.kind != "histogram" {
            continue;
        }
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for ((n, l), v) in &f.samples {
            if n == &format!("{name}_bucket") {
                let mut base = l.clone();
                let le = parse_value(&base.remove("le").unwrap())?;
                series.entry(base).or_default().push((le, *v));
            }
        }
        for (base, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !buckets.windows(2).all(|w| w[0].1 <= w[1].1) {
                return Err(format!("{name}: buckets are not cumulative"));
            }
            let inf = buckets.last().filter(|b| b.0.is_infinite()).map(|b| b.1);
            let count = f.samples.get(&(format!("{name}_count"), base.clone()));
            if inf.is_none() || count != inf.as_ref() {
                return Err(format!("{name}: +Inf bucket {inf:?} != _count {count:?}"));
            }
            if !f.samples.contains_key(&(format!("{name}_sum"), base)) {
                return Err(format!("{name}: no _sum"));
            }
        }
    }
    Ok(fams)
}

#[test]
fn the_parser_is_strict() {
    let good = "# HELP a_total A \\\\ help\\n.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\",y=\"\"} 3\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3.5\nh_count 2\n";
    let f = parse_exposition(good).unwrap();
    assert_eq!(f["a_total"].help.as_deref(), Some("A \\ help\n."));
    assert_eq!(f["a_total"].samples.len(), 1);
    for bad in [
        "a 1",                                                            // no final newline
        "a{x=\"1} 1\n",                                                   // unterminated
        "a{x=\"\\t\"} 1\n",                                               // bad escape
        "1a 1\n",                                                         // bad name
        "a one\n",                                                        // bad value
        "a 1\nb 1\na 2\n",                                                // not contiguous
        "a 1\na 1\n",                                                     // duplicate
        "# TYPE a counter\na -1\n",                                       // negative counter
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE a foo\n", // unknown type
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// The value of sample `name` with exactly `labels`, in whichever family holds it.
pub fn sample(f: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let fam = f
        .values()
        .find(|fam| fam.samples.keys().any(|(n, _)| n == name))?;
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fam.samples.get(&(name.to_string(), want)).copied()
}
