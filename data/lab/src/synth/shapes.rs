//! The universe of object classes: each drawn as a few polygons and strokes in a unit frame
//! (x right, y down, roughly within [-1, 1]), with per-instance variation of its proportions.
//!
//! Classes differ by silhouette and parts, never by colour: colours are chosen per instance (scene.rs).

use std::f32::consts::{PI, TAU};

use super::rng::Rng;

pub use super::geometry::P;
use super::geometry::{arc, ellipse, rect, rotated};

/// Which colour a part takes; the style decides what each role looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The instance colour (the one captions name).
    Body,
    /// A second, contrasting colour.
    Accent,
    /// Dark details: wheels, trunks, handles.
    Dark,
    /// Light details: windows, labels, eyes.
    Light,
    /// Foliage green.
    Leaf,
    /// The occluding blob, not part of the object.
    Distractor,
}

#[derive(Debug, Clone)]
pub enum Part {
    /// A filled region: rings under the even-odd rule (a second ring is a hole).
    Fill { rings: Vec<Vec<P>>, role: Role },
    /// An open stroke of the given width (in the same units as the points).
    Line { pts: Vec<P>, width: f32, role: Role },
}

impl Part {
    fn fill(ring: Vec<P>, role: Role) -> Part {
        Part::Fill {
            rings: vec![ring],
            role,
        }
    }

    pub fn role(&self) -> Role {
        match self {
            Part::Fill { role, .. } | Part::Line { role, .. } => *role,
        }
    }

    pub fn map(&self, f: impl Fn(P) -> P, scale: f32) -> Part {
        match self {
            Part::Fill { rings, role } => Part::Fill {
                rings: rings
                    .iter()
                    .map(|r| r.iter().map(|&p| f(p)).collect())
                    .collect(),
                role: *role,
            },
            Part::Line { pts, width, role } => Part::Line {
                pts: pts.iter().map(|&p| f(p)).collect(),
                width: width * scale,
                role: *role,
            },
        }
    }
}

/// Every class, in the order the corpus lists them (folders are sorted on disk anyway).
pub const CLASSES: &[&str] = &[
    "arrow", "ball", "boat", "bottle", "car", "cup", "fish", "flower", "heart", "house", "key",
    "lamp", "moon", "star", "tree", "umbrella",
];

/// The benchmark's eight: silhouettes that stay distinguishable in every domain, sketches included.
pub const BENCHMARK_CLASSES: &[&str] = &[
    "car", "cup", "fish", "flower", "house", "key", "star", "umbrella",
];

/// The parts of one instance of `class`, or `None` for a name outside [`CLASSES`].
pub fn build(class: &str, rng: &mut Rng) -> Option<Vec<Part>> {
    use Role::*;
    let mut v = |lo: f32, hi: f32| rng.range(lo, hi);
    let parts = match class {
        "arrow" => {
            let (shaft, head, neck) = (v(0.1, 0.2), v(0.35, 0.55), v(0.1, 0.4));
            vec![Part::fill(
                vec![
                    (-0.95, -shaft),
                    (neck, -shaft),
                    (neck, -head),
                    (0.95, 0.0),
                    (neck, head),
                    (neck, shaft),
                    (-0.95, shaft),
                ],
                Body,
            )]
        }
        "ball" => {
            // A beach ball: the band between two arcs is what tells it from a plain disc.
            let band = v(0.2, 0.45);
            let mut lens = arc(-0.9 + band, 0.0, 0.9, 0.88, -PI / 2.0, PI / 2.0, 24);
            lens.extend(arc(0.9 - band, 0.0, 0.9, 0.88, PI / 2.0, 1.5 * PI, 24));
            vec![
                Part::fill(ellipse(0.0, 0.0, 0.9, 0.9), Body),
                Part::fill(lens, Accent),
                Part::fill(ellipse(0.0, -0.82, 0.12, 0.07), Light),
            ]
        }
        "boat" => {
            let (hull_top, sail) = (v(0.15, 0.35), v(0.5, 0.8));
            vec![
                Part::Line {
                    pts: vec![(0.0, hull_top), (0.0, -0.92)],
                    width: 0.07,
                    role: Dark,
                },
                Part::fill(
                    vec![
                        (0.07, -0.88),
                        (0.07, hull_top - 0.08),
                        (0.07 + sail, hull_top - 0.08),
                    ],
                    Light,
                ),
                Part::fill(
                    vec![
                        (-0.07, -0.7),
                        (-0.07, hull_top - 0.08),
                        (-0.07 - sail * 0.6, hull_top - 0.08),
                    ],
                    Accent,
                ),
                Part::fill(
                    vec![
                        (-0.95, hull_top),
                        (0.95, hull_top),
                        (0.65, 0.65),
                        (-0.6, 0.65),
                    ],
                    Body,
                ),
            ]
        }
        "bottle" => {
            let (w, neck, shoulder) = (v(0.28, 0.42), v(0.1, 0.16), v(-0.3, 0.0));
            vec![
                Part::fill(
                    vec![
                        (-w, 0.95),
                        (-w, shoulder),
                        (-neck, shoulder - 0.3),
                        (-neck, -0.8),
                        (neck, -0.8),
                        (neck, shoulder - 0.3),
                        (w, shoulder),
                        (w, 0.95),
                    ],
                    Body,
                ),
                Part::fill(rect(-neck - 0.03, -0.97, neck + 0.03, -0.8), Accent),
                Part::fill(rect(-w, 0.25, w, 0.6), Light),
            ]
        }
        "car" => {
            let (roof, cab) = (v(-0.55, -0.35), v(0.3, 0.5));
            vec![
                Part::fill(
                    vec![
                        (-0.95, 0.0),
                        (-0.85, -0.1),
                        (0.85, -0.1),
                        (0.95, 0.05),
                        (0.95, 0.45),
                        (-0.95, 0.45),
                    ],
                    Body,
                ),
                Part::fill(
                    vec![
                        (-cab - 0.2, -0.1),
                        (-cab, roof),
                        (cab, roof),
                        (cab + 0.25, -0.1),
                    ],
                    Body,
                ),
                Part::fill(rect(-cab + 0.05, roof + 0.08, -0.03, -0.12), Light),
                Part::fill(rect(0.03, roof + 0.08, cab - 0.02, -0.12), Light),
                Part::fill(ellipse(-0.55, 0.45, 0.22, 0.22), Dark),
                Part::fill(ellipse(0.55, 0.45, 0.22, 0.22), Dark),
            ]
        }
        "cup" => {
            let (top, bottom) = (v(0.45, 0.6), v(0.3, 0.45));
            vec![
                Part::Line {
                    pts: arc(top - 0.05, 0.0, 0.35, 0.3, -PI / 2.0, PI / 2.0, 16),
                    width: 0.12,
                    role: Body,
                },
                Part::fill(
                    vec![(-top, -0.6), (top, -0.6), (bottom, 0.7), (-bottom, 0.7)],
                    Body,
                ),
                Part::fill(rect(-top * 0.8, -0.3, top * 0.8, -0.15), Accent),
            ]
        }
        "fish" => {
            let (body, tail) = (v(0.3, 0.45), v(0.3, 0.5));
            vec![
                Part::fill(
                    vec![(0.45, 0.0), (0.95, -tail), (0.85, 0.0), (0.95, tail)],
                    Body,
                ),
                Part::fill(
                    vec![
                        (-0.2, -body + 0.05),
                        (0.1, -body - 0.2),
                        (0.25, -body + 0.1),
                    ],
                    Accent,
                ),
                Part::fill(ellipse(-0.15, 0.0, 0.65, body), Body),
                Part::fill(ellipse(-0.5, -0.08, 0.09, 0.09), Light),
                Part::fill(ellipse(-0.52, -0.08, 0.045, 0.045), Dark),
            ]
        }
        "flower" => {
            let petals = 5 + (v(0.0, 3.0) as usize);
            let (r, len) = (v(0.14, 0.2), v(0.22, 0.32));
            let centre = (0.0, -0.35);
            let mut parts = vec![
                Part::Line {
                    pts: vec![(0.0, -0.3), (0.05, 0.4), (0.0, 0.95)],
                    width: 0.07,
                    role: Leaf,
                },
                Part::fill(
                    rotated(ellipse(0.25, 0.45, 0.22, 0.09), (0.05, 0.5), -0.5),
                    Leaf,
                ),
            ];
            let turn = v(0.0, TAU);
            for k in 0..petals {
                let a = turn + TAU * k as f32 / petals as f32;
                let (px, py) = (centre.0 + len * a.cos(), centre.1 + len * a.sin());
                parts.push(Part::fill(
                    rotated(ellipse(px, py, len * 0.9, r), (px, py), a),
                    Body,
                ));
            }
            parts.push(Part::fill(ellipse(centre.0, centre.1, 0.16, 0.16), Accent));
            parts
        }
        "heart" => {
            let squash = v(0.85, 1.1);
            let ring = (0..64)
                .map(|i| {
                    let t = TAU * i as f32 / 64.0;
                    let x = 16.0 * t.sin().powi(3);
                    let y = 13.0 * t.cos()
                        - 5.0 * (2.0 * t).cos()
                        - 2.0 * (3.0 * t).cos()
                        - (4.0 * t).cos();
                    (x / 17.0 * squash, -y / 17.0 - 0.1)
                })
                .collect();
            vec![Part::fill(ring, Body)]
        }
        "house" => {
            let (eave, peak) = (v(-0.25, 0.0), v(-0.95, -0.7));
            let door = v(-0.4, 0.1);
            vec![
                Part::fill(rect(-0.7, eave, 0.7, 0.92), Body),
                Part::fill(vec![(-0.92, eave), (0.0, peak), (0.92, eave)], Accent),
                Part::fill(rect(door, 0.4, door + 0.28, 0.92), Dark),
                Part::fill(rect(0.25, eave + 0.2, 0.52, eave + 0.45), Light),
            ]
        }
        "key" => {
            let (ring, teeth) = (v(0.3, 0.4), v(0.18, 0.3));
            let head = -0.9 + ring;
            vec![
                Part::Fill {
                    rings: vec![
                        ellipse(head, 0.0, ring, ring),
                        ellipse(head, 0.0, ring * 0.45, ring * 0.45),
                    ],
                    role: Body,
                },
                Part::fill(
                    vec![
                        (head + ring * 0.8, -0.09),
                        (0.95, -0.09),
                        (0.95, 0.09 + teeth),
                        (0.8, 0.09 + teeth),
                        (0.8, 0.09),
                        (0.65, 0.09),
                        (0.65, 0.09 + teeth * 0.7),
                        (0.5, 0.09 + teeth * 0.7),
                        (0.5, 0.09),
                        (head + ring * 0.8, 0.09),
                    ],
                    Body,
                ),
            ]
        }
        "lamp" => {
            let (top, bottom) = (v(0.2, 0.35), v(0.5, 0.7));
            vec![
                Part::fill(rect(-0.05, -0.3, 0.05, 0.8), Dark),
                Part::fill(
                    vec![(-0.45, 0.95), (-0.3, 0.78), (0.3, 0.78), (0.45, 0.95)],
                    Dark,
                ),
                Part::fill(
                    vec![(-top, -0.9), (top, -0.9), (bottom, -0.3), (-bottom, -0.3)],
                    Body,
                ),
            ]
        }
        "moon" => {
            // Two arcs sharing their end points: the outer half circle and an inner half ellipse.
            let (r, inner) = (v(0.8, 0.95), v(0.2, 0.6));
            let mut ring = arc(0.3, 0.0, r, r, PI / 2.0, 1.5 * PI, 32);
            ring.extend(arc(0.3, 0.0, r * inner, r, 1.5 * PI, PI / 2.0, 32));
            vec![Part::fill(ring, Body)]
        }
        "star" => {
            let (points, inner) = (5 + (v(0.0, 1.6) as usize), v(0.38, 0.52));
            let ring = (0..points * 2)
                .map(|i| {
                    let a = -PI / 2.0 + PI * i as f32 / points as f32;
                    let r = if i % 2 == 0 { 0.95 } else { 0.95 * inner };
                    (r * a.cos(), r * a.sin() + 0.05)
                })
                .collect();
            vec![Part::fill(ring, Body)]
        }
        "tree" => {
            let (trunk, spread) = (v(0.08, 0.14), v(0.6, 0.85));
            let mut parts = vec![Part::fill(rect(-trunk, 0.45, trunk, 0.95), Dark)];
            for (k, (top, base)) in [(-0.95f32, -0.3f32), (-0.65, 0.1), (-0.35, 0.5)]
                .into_iter()
                .enumerate()
            {
                let w = spread * (0.65 + 0.2 * k as f32);
                parts.push(Part::fill(vec![(0.0, top), (w, base), (-w, base)], Body));
            }
            parts
        }
        "umbrella" => {
            let (r, scallops) = (v(0.85, 0.95), 3 + (v(0.0, 2.0) as usize));
            let mut canopy = arc(0.0, 0.0, r, r * v(0.6, 0.8), PI, TAU, 32);
            let w = 2.0 * r / scallops as f32;
            for k in (0..scallops).rev() {
                let cx = -r + w * (k as f32 + 0.5);
                canopy.extend(
                    arc(cx, 0.0, w / 2.0, w * 0.3, 0.0, -PI, 8)
                        .into_iter()
                        .skip(1),
                );
            }
            let mut handle = vec![(0.0, -0.1), (0.0, 0.75)];
            handle.extend(arc(-0.14, 0.75, 0.14, 0.14, 0.0, PI, 10));
            vec![
                Part::Line {
                    pts: handle,
                    width: 0.08,
                    role: Dark,
                },
                Part::fill(canopy, Body),
            ]
        }
        _ => return None,
    };
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_builds_and_the_benchmark_is_a_sorted_subset() {
        let mut rng = Rng::new(3);
        for class in CLASSES {
            let parts = build(class, &mut rng).unwrap();
            assert!(!parts.is_empty(), "{class}");
        }
        assert!(build("giraffe", &mut rng).is_none());
        assert!(BENCHMARK_CLASSES.iter().all(|c| CLASSES.contains(c)));
        assert!(BENCHMARK_CLASSES.windows(2).all(|w| w[0] < w[1]));
        assert!(CLASSES.windows(2).all(|w| w[0] < w[1]));
    }
}
