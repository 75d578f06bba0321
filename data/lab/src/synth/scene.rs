//! One instance: a class's parts posed inside a frame of the canvas, the colours of its roles, and the
//! occluding distractor blob.

use std::f32::consts::TAU;

use super::palette::{self, Rgb};
use super::rng::Rng;
use super::shapes::{self, Part, Role, P};

/// A rectangle of the canvas, in pixels: (x0, y0, x1, y1).
pub type Frame = (f32, f32, f32, f32);

#[derive(Debug, Clone)]
pub struct Scene {
    /// The object's parts in paint order, then the distractor (if any) last, all in canvas pixels.
    pub parts: Vec<Part>,
    /// Centre and half-extent of the object, in pixels (for shading and shadows).
    pub centre: P,
    pub radius: f32,
    pub colour_name: &'static str,
    body: Rgb,
    accent: Rgb,
    dark: Rgb,
    light: Rgb,
    leaf: Rgb,
    distractor: Rgb,
}

impl Scene {
    /// Poses an instance of `class` inside `frame`; `None` for an unknown class.
    pub fn new(class: &str, frame: Frame, rng: &mut Rng) -> Option<Scene> {
        let unit = shapes::build(class, rng)?;
        let (x0, y0, x1, y1) = frame;
        let half = 0.5 * (x1 - x0).min(y1 - y0);
        let radius = half * rng.range(0.62, 0.85);
        let slack = half - radius;
        let centre = (
            0.5 * (x0 + x1) + rng.sym(slack),
            0.5 * (y0 + y1) + rng.sym(slack),
        );
        let angle = rng.sym(0.35);
        let flip = if rng.chance(0.5) { -1.0 } else { 1.0 };
        let squash = rng.range(0.9, 1.1);
        let (s, c) = angle.sin_cos();
        let pose = |(x, y): P| {
            let (x, y) = (x * flip * squash, y / squash);
            (
                centre.0 + radius * (x * c - y * s),
                centre.1 + radius * (x * s + y * c),
            )
        };
        let mut parts: Vec<Part> = unit.iter().map(|p| p.map(pose, radius)).collect();

        let (colour_name, body) = palette::named(rng);
        let accent = palette::named_except(rng, colour_name);
        let dark = palette::hsv(
            rng.range(0.0, 40.0),
            rng.range(0.2, 0.6),
            rng.range(0.18, 0.35),
        );
        let light = palette::hsv(
            rng.range(180.0, 220.0),
            rng.range(0.0, 0.25),
            rng.range(0.88, 1.0),
        );
        let leaf = palette::hsv(
            rng.range(95.0, 140.0),
            rng.range(0.55, 0.8),
            rng.range(0.45, 0.7),
        );
        let distractor = palette::named_except(rng, colour_name);

        // Half the instances are partly hidden by a blob centred near the object's edge.
        if rng.chance(0.5) {
            let a = rng.range(0.0, TAU);
            let d = radius * rng.range(0.7, 1.0);
            let (bx, by) = (centre.0 + d * a.cos(), centre.1 + d * a.sin());
            let r = radius * rng.range(0.25, 0.4);
            let n = 9;
            let turn = rng.range(0.0, TAU);
            let ring = (0..n)
                .map(|k| {
                    let t = turn + TAU * k as f32 / n as f32;
                    let rr = r * rng.range(0.65, 1.0);
                    (bx + rr * t.cos(), by + rr * t.sin())
                })
                .collect();
            parts.push(Part::Fill {
                rings: vec![smooth_ring(ring, 3)],
                role: Role::Distractor,
            });
        }
        Some(Scene {
            parts,
            centre,
            radius,
            colour_name,
            body,
            accent,
            dark,
            light,
            leaf,
            distractor,
        })
    }

    pub fn colour(&self, role: Role) -> Rgb {
        match role {
            Role::Body => self.body,
            Role::Accent => self.accent,
            Role::Dark => self.dark,
            Role::Light => self.light,
            Role::Leaf => self.leaf,
            Role::Distractor => self.distractor,
        }
    }

    /// Every outline as a polyline with its closedness: the rings of fills and the strokes of lines.
    pub fn outlines(&self) -> Vec<(Vec<P>, bool, Role)> {
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Fill { rings, role } => {
                    out.extend(rings.iter().map(|r| (r.clone(), true, *role)))
                }
                Part::Line { pts, role, .. } => out.push((pts.clone(), false, *role)),
            }
        }
        out
    }
}

/// Chaikin corner cutting: turns the blob's polygon into a rounded one.
fn smooth_ring(mut ring: Vec<P>, rounds: usize) -> Vec<P> {
    for _ in 0..rounds {
        let n = ring.len();
        ring = (0..n)
            .flat_map(|i| {
                let (a, b) = (ring[i], ring[(i + 1) % n]);
                [
                    (0.75 * a.0 + 0.25 * b.0, 0.75 * a.1 + 0.25 * b.1),
                    (0.25 * a.0 + 0.75 * b.0, 0.25 * a.1 + 0.75 * b.1),
                ]
            })
            .collect();
    }
    ring
}
