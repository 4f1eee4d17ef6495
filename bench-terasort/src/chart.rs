//! A chart of a run's phases: one bar per phase, as long as it took, labelled with its time
//! and rate. Plain SVG, no dependencies; any browser shows it.

use std::fmt::Write;

/// One bar.
#[derive(Debug, Clone)]
pub struct Bar {
    /// The phase.
    pub label: String,
    /// Its seconds.
    pub secs: f64,
    /// Bytes it moved, for its rate.
    pub bytes: u64,
}

const WIDTH: f64 = 760.0;
const LABELS: f64 = 230.0;
const ROW: f64 = 34.0;

/// The SVG text of a chart titled `title`.
pub fn svg(title: &str, bars: &[Bar]) -> String {
    let longest = bars.iter().map(|b| b.secs).fold(0.0f64, f64::max).max(1e-9);
    let span = WIDTH - LABELS - 170.0;
    let height = 60.0 + ROW * bars.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="100%" height="100%" fill="white"/><text x="12" y="24" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (i, bar) in bars.iter().enumerate() {
        let y = 44.0 + ROW * i as f64;
        let w = (bar.secs / longest * span).max(1.0);
        let rate = if bar.secs > 0.0 {
            bar.bytes as f64 / bar.secs / 1e9
        } else {
            0.0
        };
        let _ = writeln!(
            out,
            r##"<text x="12" y="{:.0}">{}</text><rect x="{LABELS}" y="{y:.0}" width="{w:.1}" height="22" fill="#3b7dd8"/><text x="{:.1}" y="{:.0}">{:.2} s, {rate:.2} GB/s</text>"##,
            y + 16.0,
            escape(&bar.label),
            LABELS + w + 8.0,
            y + 16.0,
            bar.secs,
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_longest_and_text_is_escaped() {
        let chart = svg(
            "a <run>",
            &[
                Bar {
                    label: "gen".into(),
                    secs: 2.0,
                    bytes: 4_000_000_000,
                },
                Bar {
                    label: "sort & co".into(),
                    secs: 4.0,
                    bytes: 4_000_000_000,
                },
            ],
        );
        assert!(chart.starts_with("<svg"));
        assert!(chart.contains("a &lt;run&gt;"));
        assert!(chart.contains("sort &amp; co"));
        assert!(chart.contains("2.00 s, 2.00 GB/s"));
        assert!(chart.contains("4.00 s, 1.00 GB/s"));
        assert!(
            chart.contains(r#"width="360.0""#),
            "the longest bar spans the chart"
        );
    }
}
