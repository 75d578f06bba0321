//! The styles drawn from outlines rather than fills: pencil sketch, mouse doodle and neon tubes. Each draws
//! every ring of the scene as a line; the distractor occludes by first covering its inside with the
//! background.

use super::canvas::{Canvas, Fbm, Mask};
use super::palette::{hsv, mix, scale, vivid};
use super::rng::Rng;
use super::scene::Scene;
use super::shapes::Role;
use super::strokes::hand_drawn;
use super::styles::object_mask;

/// Several jittered grey pencil strokes per outline on white paper, sometimes hatched; no fill. The
/// distractor hides what lies under it by being paper-white inside.
pub(super) fn sketch(scene: &Scene, rng: &mut Rng, s: usize, u: f32) -> Canvas {
    let paper = hsv(
        rng.range(30.0, 60.0),
        rng.range(0.0, 0.06),
        rng.range(0.95, 1.0),
    );
    let grain = Fbm::new(rng, s, s, 3.0 * u, 2);
    let mut c = Canvas::from_fn(s, s, |x, y| {
        scale(paper, 0.97 + 0.03 * grain.at(x as f32, y as f32))
    });
    let lead = rng.range(0.12, 0.4);
    let pencil = [lead, lead, lead * 1.05];
    let hatch = rng.chance(0.6);
    let mut object = object_mask(scene, s);
    if hatch {
        let angle = rng.range(0.5, 1.1);
        let (dx, dy) = (angle.cos() * 2.0 * s as f32, angle.sin() * 2.0 * s as f32);
        let spacing = rng.range(4.0, 7.0) * u;
        let mut lines = Mask::new(s, s);
        let mut k = -(s as f32);
        while k < 2.0 * s as f32 {
            lines.stroke(&[(k - dx, -dy), (k + dx, dy)], false, 0.9 * u);
            k += spacing;
        }
        for (a, b) in object.a.iter_mut().zip(&lines.a) {
            *a *= b;
        }
        c.paint(&object, rng.range(0.2, 0.35), pencil);
    }
    for (pts, closed, role) in scene.outlines() {
        if role == Role::Distractor {
            let mut m = Mask::new(s, s);
            m.fill(std::slice::from_ref(&pts));
            c.paint(&m, 1.0, paper);
        }
        for _ in 0..2 + rng.below(2) {
            let amp = rng.range(0.6, 1.4) * u;
            let line = hand_drawn(&pts, closed, rng, 2.0 * u, amp, 12.0);
            let mut m = Mask::new(s, s);
            m.stroke(&line, false, rng.range(1.0, 1.8) * u);
            c.paint(&m, rng.range(0.45, 0.8), pencil);
        }
    }
    c
}

/// One thin, wobbly black stroke per outline on pure white, as a mouse doodle.
pub(super) fn quickdraw(scene: &Scene, rng: &mut Rng, s: usize, u: f32) -> Canvas {
    let mut c = Canvas::from_fn(s, s, |_, _| [1.0; 3]);
    let width = rng.range(1.6, 2.4) * u;
    for (pts, closed, role) in scene.outlines() {
        if role == Role::Distractor {
            let mut m = Mask::new(s, s);
            m.fill(std::slice::from_ref(&pts));
            c.paint(&m, 1.0, [1.0; 3]);
        }
        let line = hand_drawn(&pts, closed, rng, 5.0 * u, 2.0 * u, 8.0);
        let mut m = Mask::new(s, s);
        m.stroke(&line, false, width);
        c.paint(&m, 1.0, [0.0; 3]);
    }
    c
}

/// Bright tube outlines with a wide additive glow on a dark wall.
pub(super) fn neon(scene: &Scene, rng: &mut Rng, s: usize, u: f32) -> Canvas {
    let wall = hsv(
        rng.range(200.0, 300.0),
        rng.range(0.3, 0.6),
        rng.range(0.04, 0.12),
    );
    let tex = Fbm::new(rng, s, s, 10.0 * u, 3);
    let mut c = Canvas::from_fn(s, s, |x, y| {
        scale(wall, 0.6 + 0.8 * tex.at(x as f32, y as f32))
    });
    let width = rng.range(1.8, 2.6) * u;
    for (pts, closed, role) in scene.outlines() {
        let tube = match role {
            Role::Light => [0.85, 0.95, 1.0],
            Role::Dark => vivid(scene.colour(Role::Body), 0.7, 1.0),
            r => vivid(scene.colour(r), 0.7, 1.0),
        };
        let gain = if role == Role::Distractor {
            let mut m = Mask::new(s, s);
            m.fill(std::slice::from_ref(&pts));
            c.paint(&m, 1.0, wall);
            0.5
        } else {
            1.0
        };
        let mut line = Mask::new(s, s);
        line.stroke(&pts, closed, width);
        let mut glow = line.clone();
        glow.blur((4.0 * u) as usize, 2);
        c.add(&glow, 1.6 * gain, tube);
        c.add(&line, gain, tube);
        let mut core = Mask::new(s, s);
        core.stroke(&pts, closed, width * 0.4);
        c.paint(&core, 0.6 * gain, mix(tube, [1.0; 3], 0.7));
    }
    c
}
