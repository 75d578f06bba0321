//! The chart of `distill study views`: accuracy (mean ± SE, %) against the number of cached views K, one
//! line per algorithm, and its online-teacher result as a dashed horizontal line of the same colour. Drawn
//! as the report's bar chart is (plotters into memory, the embedded font, an atomic PNG write).

use std::path::Path;

use anyhow::{ensure, Result};
use image::RgbImage;
use plotters::prelude::*;

use super::chart::{ensure_font, series_colour, write_png, FONT};

/// One algorithm's line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub name: String,
    /// (K, (mean %, SE %)); `None` where the runs are missing.
    pub points: Vec<(usize, Option<(f64, f64)>)>,
    /// The online teacher's (mean %, SE %).
    pub online: Option<(f64, f64)>,
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 520;

/// Writes the chart of `lines` to `path` (x: the K of every line's points, evenly spaced in order).
pub fn views_chart_png(path: &Path, title: &str, lines: &[Line]) -> Result<()> {
    write_png(path, &render(title, lines)?)
}

fn render(title: &str, lines: &[Line]) -> Result<RgbImage> {
    ensure!(!lines.is_empty(), "views chart: nothing to draw");
    ensure_font()?;
    let mut ks: Vec<usize> = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .collect();
    ks.sort_unstable();
    ks.dedup();
    ensure!(!ks.is_empty(), "views chart: no K");
    let values = lines.iter().flat_map(|l| {
        l.points
            .iter()
            .filter_map(|p| p.1)
            .chain(l.online)
            .map(|(m, se)| m + se)
    });
    let top = values.fold(0.0f64, f64::max);
    ensure!(top.is_finite(), "views chart: a value is not finite");
    let y_max = ((top / 10.0).ceil() * 10.0).clamp(10.0, 100.0f64.max(top));
    let x_of = |k: usize| ks.iter().position(|&v| v == k).unwrap_or(0) as f64;
    let n = ks.len() as f64;

    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let label: TextStyle = (FONT, 14).into_font().color(&BLACK);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 18).into_font().color(&BLACK))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.3f64..(n - 0.7).max(0.3), 0f64..y_max)?;
        let ks_for_labels = ks.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(ks.len())
            .x_label_formatter(&move |x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    ks_for_labels
                        .get(i as usize)
                        .map_or(String::new(), |k| k.to_string())
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("cached views K")
            .y_desc("Avg-OOD accuracy (%)")
            .label_style(label.clone())
            .axis_desc_style(label.clone())
            .light_line_style(WHITE)
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;
        for (i, line) in lines.iter().enumerate() {
            let colour = series_colour(i);
            let pts: Vec<(f64, f64, f64)> = line
                .points
                .iter()
                .filter_map(|&(k, v)| v.map(|(m, se)| (x_of(k), m, se)))
                .collect();
            chart
                .draw_series(std::iter::once(PathElement::new(
                    pts.iter().map(|&(x, m, _)| (x, m)).collect::<Vec<_>>(),
                    colour.stroke_width(2),
                )))?
                .label(line.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart.draw_series(
                pts.iter()
                    .map(|&(x, m, _)| Circle::new((x, m), 4, colour.filled())),
            )?;
            chart.draw_series(pts.iter().filter(|p| p.2 > 0.0).map(|&(x, m, se)| {
                PathElement::new(vec![(x, m - se), (x, m + se)], colour.stroke_width(1))
            }))?;
            if let Some((m, _)) = line.online {
                // Dashed: short segments across the plot.
                let segments = (0..((n * 8.0) as usize)).step_by(2).map(move |j| {
                    let x0 = -0.3 + j as f64 / 8.0;
                    PathElement::new(vec![(x0, m), (x0 + 0.1, m)], colour.stroke_width(2))
                });
                chart.draw_series(segments)?;
            }
        }
        chart
            .configure_series_labels()
            .label_font(label)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()?;
    }
    RgbImage::from_raw(WIDTH, HEIGHT, buf).ok_or_else(|| anyhow::anyhow!("views chart: bad buffer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_lines_and_the_online_level() {
        let lines = vec![
            Line {
                name: "kd".into(),
                points: vec![(0, Some((40.0, 2.0))), (1, Some((45.0, 1.0))), (4, None)],
                online: Some((47.0, 1.0)),
            },
            Line {
                name: "adip-distill".into(),
                points: vec![
                    (0, Some((42.0, 0.0))),
                    (1, Some((48.0, 0.5))),
                    (4, Some((50.0, 1.0))),
                ],
                online: None,
            },
        ];
        let img = render("t", &lines).unwrap();
        assert_eq!((img.width(), img.height()), (WIDTH, HEIGHT));
        // Both palette colours appear (the lines were drawn).
        for i in 0..2 {
            let RGBColor(r, g, b) = series_colour(i);
            assert!(img.pixels().any(|p| p.0 == [r, g, b]), "series {i} drawn");
        }
        assert!(render("t", &[]).is_err());
    }
}
