//! Grouped bar chart PNG for result tables (mean ± standard error, in %).
//!
//! Rendering uses `plotters` (bitmap backend into an in-memory RGB buffer, text via
//! `ab_glyph`) and the PNG is encoded with `image`. No system fonts or system
//! libraries are needed: a small DejaVu Sans subset (Basic Latin + Latin-1 + a few
//! dashes, ~32 KB, Bitstream Vera licence, see `distill/assets/DejaVuSans-LICENSE.txt`) is
//! compiled into the binary and registered with plotters under the family name
//! `sans-serif` on first use. Keep plotters' `ttf` feature OFF everywhere in the
//! dependency graph: if any crate enables it, feature unification silently switches
//! text to font-kit/fontconfig and the registered font is ignored.
//! The font lives in `distill/assets/`.
//!
//! Behaviour:
//! * one bar per series within each group, distinct colours, black error bars of
//!   ±SE where SE > 0, a legend (right-hand column) with the series names, y axis
//!   "accuracy (%)" from 0 to 100 (or the largest mean+SE rounded up to a multiple
//!   of 10 when above 100), the title at the top;
//! * `None` values draw no bar (a small grey "n/a" marks the slot);
//! * empty `groups` or empty `series` is an error (nothing is written), as is a
//!   series whose `values` length differs from `groups`, or a non-finite number or a
//!   negative SE (negative means are clamped to 0);
//! * long group and series names get a middle "…" to fit their space (group labels
//!   first shrink from 14 to 10 px);
//! * the file is written atomically (temporary file beside the target, then renamed).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, ensure, Context, Result};
use image::{codecs::png::PngEncoder, ImageEncoder, RgbImage};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

/// One bar series (e.g. an algorithm): one value per group.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// Per group: (mean %, standard error %); `None` = missing (no bar drawn).
    pub values: Vec<Option<(f64, f64)>>,
}

const FONT_BYTES: &[u8] = include_bytes!("../../../assets/DejaVuSans-subset.ttf");
pub(super) const FONT: &str = "sans-serif";

const HEIGHT: u32 = 500;
const MIN_WIDTH: u32 = 1000;
const MAX_WIDTH: u32 = 8000;
/// Horizontal pixels per bar and per group (padding) when sizing the image.
const PX_PER_BAR: u32 = 18;
const PX_GROUP_PAD: u32 = 28;
/// Space taken by the y axis labels, margins and such, outside the groups.
const PX_FIXED: u32 = 110;
const LEGEND_SWATCH: i32 = 14;
const LEGEND_MAX_TEXT: u32 = 220;
const TITLE_SIZE: u32 = 22;
const LABEL_SIZE: u32 = 14;

/// Tableau-10 palette: distinct and colour-blind friendlier than pure primaries.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Colour of series `i`: the palette, then golden-angle hues for the rest.
pub fn series_colour(i: usize) -> RGBColor {
    if let Some(&(r, g, b)) = PALETTE.get(i) {
        return RGBColor(r, g, b);
    }
    let h = ((i - PALETTE.len()) as f64 * 137.508 + 15.0) % 360.0;
    let l = if (i / PALETTE.len()).is_multiple_of(2) {
        0.45
    } else {
        0.62
    };
    let (r, g, b) = HSLColor(h / 360.0, 0.65, l).rgb();
    RGBColor(r, g, b)
}

pub(super) fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    ensure!(ok, "bar chart: embedded font could not be parsed");
    Ok(())
}

/// Image size for a chart of `n_groups` groups of `n_series` bars, before the legend.
fn plot_width(n_groups: usize, n_series: usize) -> u32 {
    let per_group = n_series as u32 * PX_PER_BAR + PX_GROUP_PAD;
    PX_FIXED.saturating_add((n_groups as u32).saturating_mul(per_group))
}

/// Shorten `text` to fit in `max_px` at `style` by replacing its middle with "…"
/// (keeps both ends, which tell apart names such as `domain_1` / `domain_2`).
fn fit_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
    max_px: u32,
) -> String {
    let width = |s: &str| {
        area.estimate_text_size(s, style)
            .map(|(w, _)| w)
            .unwrap_or(0)
    };
    if width(text) <= max_px {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (2..chars.len()).rev() {
        let head = keep.div_ceil(2);
        let tail = keep - head;
        let candidate: String = chars[..head]
            .iter()
            .chain(['…'].iter())
            .chain(chars[chars.len() - tail..].iter())
            .collect();
        if width(&candidate) <= max_px {
            return candidate;
        }
    }
    chars.first().map(|c| format!("{c}…")).unwrap_or_default()
}

fn validate(groups: &[String], series: &[Series]) -> Result<f64> {
    ensure!(!groups.is_empty(), "bar chart: no groups to plot");
    ensure!(!series.is_empty(), "bar chart: no series to plot");
    let mut top = 0.0f64;
    for s in series {
        ensure!(
            s.values.len() == groups.len(),
            "bar chart: series {:?} has {} values but there are {} groups",
            s.name,
            s.values.len(),
            groups.len()
        );
        for &(mean, se) in s.values.iter().flatten() {
            ensure!(
                mean.is_finite() && se.is_finite() && se >= 0.0,
                "bar chart: series {:?} has an invalid value ({mean}, {se})",
                s.name
            );
            top = top.max(mean + se);
        }
    }
    Ok(if top <= 100.0 {
        100.0
    } else {
        (top / 10.0).ceil() * 10.0
    })
}

/// Render the chart into an RGB image (no file I/O).
fn render(title: &str, groups: &[String], series: &[Series]) -> Result<RgbImage> {
    let y_max = validate(groups, series)?;
    ensure_font()?;

    let label_style: TextStyle = (FONT, LABEL_SIZE).into_font().color(&BLACK);
    let (n_groups, n_series) = (groups.len(), series.len());

    // Legend column: as wide as the longest (shortened) name.
    let legend_w = {
        let mut probe_buf = vec![0u8; 3];
        let probe = BitMapBackend::with_buffer(&mut probe_buf, (1, 1)).into_drawing_area();
        let widest = series
            .iter()
            .map(|s| {
                let name = fit_text(&probe, &s.name, &label_style, LEGEND_MAX_TEXT);
                probe
                    .estimate_text_size(&name, &label_style)
                    .map(|(w, _)| w)
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        widest + LEGEND_SWATCH as u32 + 36
    };
    let width = (plot_width(n_groups, n_series) + legend_w).clamp(MIN_WIDTH, MAX_WIDTH);
    let height = HEIGHT;

    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        // `root` stays unmargined: text placed from `backend_coord` uses absolute pixels.
        let framed = root.margin(8, 0, 0, 0);
        let title = fit_text(
            &root,
            title,
            &(FONT, TITLE_SIZE).into_font().into(),
            width - 20,
        );
        let body = framed.titled(&title, (FONT, TITLE_SIZE).into_font().color(&BLACK))?;
        let (plot_area, legend_area) = body.split_horizontally(width - legend_w);

        let mut chart = ChartBuilder::on(&plot_area)
            .margin_left(10)
            .margin_right(10)
            .margin_top(10)
            .margin_bottom(6)
            .x_label_area_size(34)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..n_groups as f64, 0f64..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels((y_max / 10.0) as usize + 1)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("accuracy (%)")
            .label_style(label_style.clone())
            .axis_desc_style(label_style.clone())
            .light_line_style(WHITE)
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;

        // Bars occupy the middle 80% of each group; each bar leaves a small gap.
        let slot = 0.8 / n_series as f64;
        let bar_pad = slot * 0.08;
        let na_style = label_style.clone().color(&RGBColor(150, 150, 150));
        let na_style = TextStyle {
            font: (FONT, 10).into_font(),
            ..na_style
        };
        for (j, s) in series.iter().enumerate() {
            let colour = series_colour(j);
            for (i, v) in s.values.iter().enumerate() {
                let x0 = i as f64 + 0.1 + j as f64 * slot + bar_pad;
                let x1 = x0 + slot - 2.0 * bar_pad;
                let xm = (x0 + x1) / 2.0;
                let Some((mean, se)) = *v else {
                    let (px, py) = chart.backend_coord(&(xm, 0.0));
                    let text = "n/a";
                    let slot_px =
                        chart.backend_coord(&(x1, 0.0)).0 - chart.backend_coord(&(x0, 0.0)).0;
                    let w = root
                        .estimate_text_size(text, &na_style)
                        .map(|s| s.0)
                        .unwrap_or(0);
                    if w as i32 <= slot_px + 4 {
                        root.draw(&Text::new(
                            text,
                            (px, py - 3),
                            na_style.pos(Pos::new(HPos::Center, VPos::Bottom)),
                        ))?;
                    }
                    continue;
                };
                let mean_c = mean.clamp(0.0, y_max);
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x1, mean_c)],
                    colour.filled(),
                )))?;
                if se > 0.0 {
                    let lo = (mean - se).clamp(0.0, y_max);
                    let hi = (mean + se).clamp(0.0, y_max);
                    let cap = (x1 - x0) * 0.25;
                    let err = BLACK.stroke_width(1);
                    chart.draw_series([
                        PathElement::new(vec![(xm, lo), (xm, hi)], err),
                        PathElement::new(vec![(xm - cap, lo), (xm + cap, lo)], err),
                        PathElement::new(vec![(xm - cap, hi), (xm + cap, hi)], err),
                    ])?;
                }
            }
        }

        // Group labels under the axis, centred, shortened to the group width.
        let group_px =
            (chart.backend_coord(&(1.0, 0.0)).0 - chart.backend_coord(&(0.0, 0.0)).0).max(8) as u32;
        // One font size for all group labels: the largest (14 down to 10) at which
        // they all fit; names still too long get a middle ellipsis.
        let avail = group_px.saturating_sub(6);
        let group_style = (10..=LABEL_SIZE)
            .rev()
            .map(|size| TextStyle::from((FONT, size).into_font()).color(&BLACK))
            .find(|st| {
                groups
                    .iter()
                    .all(|g| root.estimate_text_size(g, st).map(|(w, _)| w).unwrap_or(0) <= avail)
            })
            .unwrap_or_else(|| TextStyle::from((FONT, 10).into_font()).color(&BLACK));
        for (i, g) in groups.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let text = fit_text(&root, g, &group_style, avail);
            root.draw(&Text::new(
                text,
                (px, py + 8),
                group_style.pos(Pos::new(HPos::Center, VPos::Top)),
            ))?;
        }

        // Legend: swatch + name per series, top-aligned with the plot.
        let line_h = LEGEND_SWATCH + 8;
        for (j, s) in series.iter().enumerate() {
            let y = 16 + j as i32 * line_h;
            legend_area.draw(&Rectangle::new(
                [(8, y), (8 + LEGEND_SWATCH, y + LEGEND_SWATCH)],
                series_colour(j).filled(),
            ))?;
            let name = fit_text(&legend_area, &s.name, &label_style, LEGEND_MAX_TEXT);
            legend_area.draw(&Text::new(
                name,
                (8 + LEGEND_SWATCH + 8, y + LEGEND_SWATCH / 2),
                label_style.pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        root.present()?;
    }
    RgbImage::from_raw(width, height, buf).ok_or_else(|| anyhow!("bar chart: buffer size mismatch"))
}

/// Render a grouped bar chart and write it as a PNG to `path`, atomically.
///
/// `groups` are the x-axis groups; each series has one `Option<(mean %, SE %)>` per
/// group. Errors (and writes nothing) when `groups` or `series` is empty, when a
/// series' length differs from `groups`, or on non-finite / negative-SE values.
pub fn bar_chart_png(path: &Path, title: &str, groups: &[String], series: &[Series]) -> Result<()> {
    write_png(path, &render(title, groups, series)?)
}

/// Writes `img` as a PNG at `path`, atomically (a temporary file beside it, then renamed).
pub(super) fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        PngEncoder::new(&mut w)
            .write_image(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .context("encoding the chart PNG")?;
        w.flush().context("writing the chart PNG")?;
    }
    // NamedTempFile is created 0600; give the chart the usual 0644.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .context("setting the chart's permissions")?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("dom{i}")).collect()
    }

    fn count(img: &RgbImage, c: RGBColor) -> usize {
        img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count()
    }

    fn example() -> (Vec<String>, Vec<Series>) {
        let groups: Vec<String> = [
            "clipart",
            "infograph",
            "painting",
            "quickdraw",
            "Avg-ID",
            "Avg-OOD",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let names = [
            "zeroshot",
            "erm-lp",
            "erm-ft",
            "kd",
            "adip-align",
            "adip-distill",
            "sd (self-distillation, long name variant)",
        ];
        let series = names
            .iter()
            .enumerate()
            .map(|(j, n)| Series {
                name: n.to_string(),
                values: (0..groups.len())
                    .map(|i| {
                        if j == 3 && i == 3 {
                            None
                        } else {
                            let m = 35.0 + 7.0 * j as f64 + 4.0 * ((i * 7 + j * 3) % 5) as f64;
                            Some((m.min(97.0), if j == 0 { 0.0 } else { 0.4 + 0.3 * i as f64 }))
                        }
                    })
                    .collect(),
            })
            .collect();
        (groups, series)
    }

    #[test]
    fn writes_decodable_png_with_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let (g, s) = example();
        bar_chart_png(&path, "Held-out domain accuracy", &g, &s).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.height(), HEIGHT);
        // Plot part grows with groups × series; the legend column adds 50..=270 px.
        let plot = plot_width(g.len(), s.len());
        assert!(
            (plot + 50..=plot + LEGEND_MAX_TEXT + 50).contains(&img.width()),
            "width {} for plot width {plot}",
            img.width()
        );
        // A tiny chart is exactly the minimum size.
        let one = vec![Series {
            name: "a".into(),
            values: vec![Some((50.0, 1.0))],
        }];
        bar_chart_png(&path, "t", &groups(1), &one).unwrap();
        assert_eq!(image::image_dimensions(&path).unwrap(), (MIN_WIDTH, HEIGHT));
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Wider for more groups.
        let wide_groups = groups(20);
        let wide: Vec<Series> = s
            .iter()
            .map(|x| Series {
                name: x.name.clone(),
                values: vec![Some((50.0, 1.0)); 20],
            })
            .collect();
        bar_chart_png(&path, "wide", &wide_groups, &wide).unwrap();
        let img2 = image::open(&path).unwrap();
        assert!(img2.width() > img.width());
        assert_eq!(img2.height(), HEIGHT);
    }

    #[test]
    fn every_series_colour_is_drawn() {
        let (g, s) = example();
        let img = render("t", &g, &s).unwrap();
        let swatch = (LEGEND_SWATCH * LEGEND_SWATCH) as usize;
        for j in 0..s.len() {
            let n = count(&img, series_colour(j));
            assert!(n > swatch * 3, "series {j}: only {n} pixels of its colour");
        }
        // Colours are distinct, also past the fixed palette.
        let cols: Vec<_> = (0..30).map(series_colour).collect();
        for a in 0..cols.len() {
            for b in a + 1..cols.len() {
                assert_ne!(cols[a], cols[b], "{a} vs {b}");
            }
        }
    }

    #[test]
    fn missing_value_draws_no_bar() {
        let g = groups(2);
        let mk = |v: Vec<Option<(f64, f64)>>| {
            vec![
                Series {
                    name: "a".into(),
                    values: v,
                },
                Series {
                    name: "b".into(),
                    values: vec![Some((60.0, 2.0)); 2],
                },
            ]
        };
        let swatch = (LEGEND_SWATCH * LEGEND_SWATCH) as usize;
        let c = series_colour(0);
        // All missing: only the legend swatch has the colour.
        let none = render("t", &g, &mk(vec![None, None])).unwrap();
        assert_eq!(count(&none, c), swatch);
        // One present: swatch + one bar; both present: swatch + two bars of equal size.
        let one = count(
            &render("t", &g, &mk(vec![Some((50.0, 0.0)), None])).unwrap(),
            c,
        ) - swatch;
        let two = count(
            &render("t", &g, &mk(vec![Some((50.0, 0.0)), Some((50.0, 0.0))])).unwrap(),
            c,
        ) - swatch;
        assert!(one > 1000, "bar too small: {one}");
        // Bars in different groups may differ by a pixel column from rounding.
        assert!(two.abs_diff(2 * one) <= one / 10, "one {one}, two {two}");
    }

    #[test]
    fn empty_or_inconsistent_input_errors_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.png");
        let g = groups(2);
        let err = bar_chart_png(&path, "t", &g, &[]).unwrap_err();
        assert!(err.to_string().contains("no series"), "{err}");
        let s = vec![Series {
            name: "a".into(),
            values: vec![Some((1.0, 0.0))],
        }];
        let err = bar_chart_png(&path, "t", &[], &s).unwrap_err();
        assert!(err.to_string().contains("no groups"), "{err}");
        let err = bar_chart_png(&path, "t", &g, &s).unwrap_err();
        assert!(
            err.to_string().contains("1 values but there are 2 groups"),
            "{err}"
        );
        let bad = vec![Series {
            name: "a".into(),
            values: vec![Some((f64::NAN, 0.0)), None],
        }];
        assert!(bar_chart_png(&path, "t", &g, &bad).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn long_names_keep_both_ends() {
        ensure_font().unwrap();
        let mut buf = vec![0u8; 3];
        let area = BitMapBackend::with_buffer(&mut buf, (1, 1)).into_drawing_area();
        let st: TextStyle = (FONT, LABEL_SIZE).into_font().into();
        assert_eq!(fit_text(&area, "short", &st, 200), "short");
        let t = fit_text(&area, "a_rather_long_domain_name_11", &st, 90);
        assert!(
            t.starts_with("a_r") && t.ends_with("_11") && t.contains('…'),
            "{t}"
        );
        assert!(area.estimate_text_size(&t, &st).unwrap().0 <= 90);
    }

    #[test]
    fn y_axis_extends_past_100_when_needed() {
        let s = vec![Series {
            name: "a".into(),
            values: vec![Some((104.0, 3.0))],
        }];
        assert_eq!(validate(&groups(1), &s).unwrap(), 110.0);
        let s = vec![Series {
            name: "a".into(),
            values: vec![Some((99.0, 1.0))],
        }];
        assert_eq!(validate(&groups(1), &s).unwrap(), 100.0);
        render("t", &groups(1), &s).unwrap();
    }

    /// Stress case: many long group names, few series, one huge SE.
    #[test]
    #[ignore]
    fn render_stress() {
        let g: Vec<String> = (0..12)
            .map(|i| format!("a_rather_long_domain_name_{i}"))
            .chain(["Avg-ID".to_string(), "Avg-OOD".to_string()])
            .collect();
        let s: Vec<Series> = (0..3)
            .map(|j| Series {
                name: format!("algo-{j}"),
                values: (0..g.len())
                    .map(|i| Some((20.0 + 5.0 * (i + j) as f64, if i == 0 { 30.0 } else { 1.5 })))
                    .collect(),
            })
            .collect();
        bar_chart_png(Path::new("/tmp/chart_stress.png"), "Stress", &g, &s).unwrap();
    }

    /// Writes /tmp/chart_example.png for a visual check: `cargo test -- --ignored`.
    #[test]
    #[ignore]
    fn render_example() {
        let (g, s) = example();
        bar_chart_png(
            Path::new("/tmp/chart_example.png"),
            "Leave-one-domain-out accuracy (mean ± SE, %)",
            &g,
            &s,
        )
        .unwrap();
    }
}
