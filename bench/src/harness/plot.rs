//! The latency-percentile plot: gateway against baseline, as a PNG.

use std::path::Path;

use plotters::prelude::*;

use super::ScenarioResult;

/// Where a system font may be; without one the plot is drawn without text.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn load_font() -> bool {
    for path in FONTS {
        if let Ok(bytes) = std::fs::read(path) {
            // plotters keeps registered fonts for the process's life.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// x is the percentile on a "nines" scale: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-6).log10()
}

pub fn latency_curves(scenarios: &[ScenarioResult], path: &Path) -> anyhow::Result<()> {
    let with_text = load_font();
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let curves: Vec<&ScenarioResult> = scenarios.iter().filter(|s| !s.curve.is_empty()).collect();
    let y_max = curves
        .iter()
        .flat_map(|s| s.curve.iter().map(|(_, y)| *y))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root);
    chart.margin(20);
    if with_text {
        chart
            .caption(
                "Latency by percentile: gateway against baseline",
                ("sans-serif", 22),
            )
            .x_label_area_size(45)
            .y_label_area_size(60);
    }
    let mut chart = chart.build_cartesian_2d(0.0..4.0, 0.0..y_max)?;
    if with_text {
        chart
            .configure_mesh()
            .x_desc("percentile")
            .x_labels(5)
            .y_desc("latency (ms)")
            .x_label_formatter(&|x: &f64| match x.round() as i32 {
                0 => "0".into(),
                1 => "90".into(),
                2 => "99".into(),
                3 => "99.9".into(),
                4 => "99.99".into(),
                _ => String::new(),
            })
            .draw()?;
    }
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN];
    for (i, s) in curves.iter().enumerate() {
        let color = palette[i % palette.len()];
        let series = chart.draw_series(LineSeries::new(
            s.curve.iter().map(|(q, y)| (nines(*q), *y)),
            color.stroke_width(2),
        ))?;
        if with_text {
            series
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
    }
    if with_text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
