//! Turning runs into figures: percentiles, the table, ratios, the plot.

use std::fmt::Write as _;

use serde::Serialize;

use crate::load::Run;

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub ok: u64,
    pub errors: u64,
}

impl Figures {
    pub fn of(run: &Run) -> Self {
        let mut sorted = run.latencies_us.clone();
        sorted.sort_unstable();
        let pct = |p: f64| -> f64 {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
            f64::from(sorted[index]) / 1000.0
        };
        Self {
            requests_per_second: sorted.len() as f64 / run.elapsed.as_secs_f64().max(1e-9),
            p50_ms: pct(0.50),
            p90_ms: pct(0.90),
            p99_ms: pct(0.99),
            p999_ms: pct(0.999),
            ok: sorted.len() as u64,
            errors: run.errors,
        }
    }
}

/// Everything measured for one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub description: String,
    /// Closed loop: saturation.
    pub saturation: Figures,
    /// Server CPU time per request during the closed loop, in microseconds.
    pub cpu_us_per_request: Option<f64>,
    /// The load generator's own CPU time per request, in microseconds.
    pub client_cpu_us_per_request: Option<f64>,
    /// Peak resident memory of the server processes, in MiB.
    pub peak_rss_mib: Option<f64>,
    /// Open loop: (offered rate, figures).
    pub open_loop: Vec<(f64, Figures)>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The results table, in Markdown.
pub fn table(reports: &[TargetReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| target | mode | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | server CPU us/req | client CPU us/req | peak RSS MiB |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in reports {
        let f = &r.saturation;
        let _ = writeln!(
            out,
            "| {} | closed loop (saturation) | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |",
            r.target,
            f.requests_per_second,
            f.p50_ms,
            f.p90_ms,
            f.p99_ms,
            f.p999_ms,
            f.errors,
            opt(r.cpu_us_per_request, 1),
            opt(r.client_cpu_us_per_request, 1),
            opt(r.peak_rss_mib, 1),
        );
        for (rate, f) in &r.open_loop {
            let _ = writeln!(
                out,
                "| {} | open loop at {:.0}/s | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | | | |",
                r.target,
                rate,
                f.requests_per_second,
                f.p50_ms,
                f.p90_ms,
                f.p99_ms,
                f.p999_ms,
                f.errors,
            );
        }
    }
    out
}

/// Throughput and latency ratios between the targets that ran.
pub fn ratios(reports: &[TargetReport]) -> String {
    let find = |name: &str| reports.iter().find(|r| r.target == name);
    let mut out = String::new();
    let pairs = [
        ("axon", "bare", "Axon direct vs the bare wasmtime host"),
        (
            "full",
            "axon",
            "the full path (Orbit -> Axon) vs Axon direct",
        ),
        (
            "axon",
            "native",
            "Axon direct vs native code (the price of the sandbox)",
        ),
        ("full", "native", "the full path vs native code"),
        (
            "full",
            "full-unaudited",
            "the full path vs the same without audit records (the audit's cost)",
        ),
    ];
    for (a, b, what) in pairs {
        if let (Some(x), Some(y)) = (find(a), find(b)) {
            let _ = writeln!(
                out,
                "- {what}: throughput {:.2}x, p50 latency {:.2}x",
                x.saturation.requests_per_second / y.saturation.requests_per_second,
                x.saturation.p50_ms / y.saturation.p50_ms,
            );
        }
    }
    out
}

/// An SVG plot of p50 and p99 latency against offered load, per target.
pub fn plot(reports: &[TargetReport], title: &str) -> String {
    let (width, height, margin) = (760.0, 420.0, 60.0);
    let points: Vec<(f64, f64)> = reports
        .iter()
        .flat_map(|r| r.open_loop.iter().map(|(rate, f)| (*rate, f.p99_ms)))
        .filter(|(_, y)| y.is_finite())
        .collect();
    let max_x = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.05;
    let max_y = points.iter().map(|p| p.1).fold(0.1, f64::max) * 1.1;
    let x = |v: f64| margin + v / max_x * (width - 2.0 * margin);
    let y = |v: f64| height - margin - v / max_y * (height - 2.0 * margin);
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="14">{title}</text>"#,
        width / 2.0
    );
    // Axes and ticks.
    let _ = writeln!(
        svg,
        r#"<line x1="{m}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{m}" y1="{t}" x2="{m}" y2="{b}" stroke="black"/>"#,
        m = margin,
        b = height - margin,
        r = width - margin,
        t = margin
    );
    for i in 0..=5 {
        let (vx, vy) = (max_x * f64::from(i) / 5.0, max_y * f64::from(i) / 5.0);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.0}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{:.2}</text>"#,
            x(vx),
            height - margin + 16.0,
            vx,
            margin - 6.0,
            y(vy) + 4.0,
            vy
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered load (requests/s)</text>"#,
        width / 2.0,
        height - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (ms): solid p99, dashed p50</text>"#,
        height / 2.0,
        height / 2.0
    );
    for (i, r) in reports.iter().enumerate() {
        let colour = colours[i % colours.len()];
        for (dash, pick) in [("", 99), ("5,4", 50)] {
            let path: Vec<String> = r
                .open_loop
                .iter()
                .filter_map(|(rate, f)| {
                    let v = if pick == 99 { f.p99_ms } else { f.p50_ms };
                    v.is_finite()
                        .then(|| format!("{:.1},{:.1}", x(*rate), y(v)))
                })
                .collect();
            if !path.is_empty() {
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
                    path.join(" ")
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="3" fill="{colour}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            width - margin - 150.0,
            margin + 14.0 * i as f64,
            width - margin - 132.0,
            margin + 14.0 * i as f64 + 5.0,
            r.target
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn run(latencies_us: Vec<u32>, secs: u64) -> Run {
        Run {
            latencies_us,
            errors: 1,
            first_error: None,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn percentiles_and_throughput_come_from_the_latencies() {
        let figures = Figures::of(&run((1..=1000).collect(), 2));
        assert_eq!(figures.requests_per_second, 500.0);
        assert_eq!(figures.p50_ms, 0.5);
        assert_eq!(figures.p90_ms, 0.9);
        assert_eq!(figures.p99_ms, 0.99);
        assert_eq!(figures.p999_ms, 0.999);
        assert_eq!((figures.ok, figures.errors), (1000, 1));
        assert!(Figures::of(&run(Vec::new(), 1)).p50_ms.is_nan());
    }

    #[test]
    fn the_table_ratios_and_plot_name_every_target() {
        let report = |target: &str, rps_us: u32| TargetReport {
            target: target.into(),
            description: String::new(),
            saturation: Figures::of(&run(vec![rps_us; 100], 1)),
            cpu_us_per_request: Some(10.0),
            client_cpu_us_per_request: None,
            peak_rss_mib: None,
            open_loop: vec![(50.0, Figures::of(&run(vec![rps_us; 50], 1)))],
        };
        let reports = [report("axon", 100), report("full", 200)];
        let table = table(&reports);
        assert!(
            table.contains("| axon | closed loop (saturation) | 100 |"),
            "{table}"
        );
        assert!(table.contains("| full | open loop at 50/s |"), "{table}");
        let ratios = ratios(&reports);
        assert!(
            ratios.contains("throughput 1.00x, p50 latency 2.00x"),
            "{ratios}"
        );
        let svg = plot(&reports, "t");
        assert!(svg.starts_with("<svg") && svg.contains("axon") && svg.contains("full"));
    }
}
