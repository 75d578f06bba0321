//! The image loader of the backbone algorithms: decoding, view replay and preprocessing on a pool of
//! `--workers` threads of its own, one batch ahead of the compute, so that a GPU never waits for the CPU.
//! Training: the trainer names the next step's picks ([`Loader::prefetch`]) before the current step takes
//! its own ([`Loader::batch`]), so the queue holds two batches: the one being taken and the next.
//! Evaluation: [`Loader::pipelined`] prepares chunk i+1 while chunk i runs. Every image's pixels depend only on (image, view), never on which thread made them or when, so
//! results do not depend on the number of workers. With 0 workers (the CPU's default: there the compute
//! already uses every core) batches are made when asked, on the caller's pool.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};

use super::view_replay::ImageSource;

type Picks = Vec<(usize, usize)>;

/// Batches made ahead, oldest first: the current step's and the next one's.
const QUEUE: usize = 2;

pub struct Loader {
    images: Arc<ImageSource>,
    pool: Option<rayon::ThreadPool>,
    /// Batches being made ahead, oldest first: their picks and where their pixels arrive.
    pending: VecDeque<(Picks, Receiver<Result<Vec<f32>>>)>,
    /// Batches made so far, prefetched or not (what the tests count to see that none is made twice).
    made: Arc<AtomicUsize>,
}

impl Loader {
    pub fn new(images: Arc<ImageSource>, workers: usize) -> Result<Self> {
        let pool = if workers == 0 {
            None
        } else {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(workers)
                    .thread_name(|i| format!("vl2v-loader-{i}"))
                    .build()
                    .context("cannot start the loader's worker threads")?,
            )
        };
        Ok(Loader {
            images,
            pool,
            pending: VecDeque::new(),
            made: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn images(&self) -> &ImageSource {
        &self.images
    }

    /// Starts making the pixels of `picks` on the workers, returning where they will arrive.
    fn spawn(&self, pool: &rayon::ThreadPool, picks: Picks) -> Receiver<Result<Vec<f32>>> {
        let (tx, rx) = sync_channel(1);
        let images = Arc::clone(&self.images);
        let made = Arc::clone(&self.made);
        // The batch's images are spread over the workers by `pixels`' own parallel loop (this pool's).
        pool.spawn(move || {
            made.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(images.pixels(&picks));
        });
        rx
    }

    /// Starts a coming training batch (no-op without workers). Batches prefetched but never asked for are
    /// dropped, as is the oldest when more than [`QUEUE`] are ahead.
    pub fn prefetch(&mut self, picks: &[(usize, usize)]) {
        if let Some(pool) = &self.pool {
            let rx = self.spawn(pool, picks.to_vec());
            self.pending.push_back((picks.to_vec(), rx));
            if self.pending.len() > QUEUE {
                self.pending.pop_front();
            }
        }
    }

    /// The preprocessed pixels of `picks`: the prefetched batch when one is this one (those ahead of it are
    /// dropped), else made now (the queue kept).
    pub fn batch(&mut self, picks: &[(usize, usize)]) -> Result<Vec<f32>> {
        if let Some(at) = self.pending.iter().position(|(ahead, _)| ahead == picks) {
            self.pending.drain(..at);
            let (_, rx) = self.pending.pop_front().expect("the matching batch");
            return received(rx);
        }
        self.made.fetch_add(1, Ordering::Relaxed);
        match &self.pool {
            Some(pool) => pool.install(|| self.images.pixels(picks)),
            None => self.images.pixels(picks),
        }
    }

    /// Calls `each` on the pixels of every chunk of `batches` in order, making chunk i+1 while `each` runs on
    /// chunk i.
    pub fn pipelined(
        &self,
        batches: &[Vec<(usize, usize)>],
        mut each: impl FnMut(usize, Vec<f32>) -> Result<()>,
    ) -> Result<()> {
        let Some(pool) = &self.pool else {
            for (i, picks) in batches.iter().enumerate() {
                self.made.fetch_add(1, Ordering::Relaxed);
                each(i, self.images.pixels(picks)?)?;
            }
            return Ok(());
        };
        let mut next = batches.first().map(|p| self.spawn(pool, p.clone()));
        for i in 0..batches.len() {
            let rx = next.take().expect("one batch in flight");
            next = batches.get(i + 1).map(|p| self.spawn(pool, p.clone()));
            each(i, received(rx)?)?;
        }
        Ok(())
    }
}

fn received(rx: Receiver<Result<Vec<f32>>>) -> Result<Vec<f32>> {
    rx.recv()
        .map_err(|_| anyhow!("an image loader thread stopped without a result"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use vl2v::image::Preprocess;

    fn source(dir: &std::path::Path) -> Arc<ImageSource> {
        let mut paths = Vec::new();
        for k in 0..6u32 {
            let img = image::RgbImage::from_fn(30 + k, 20 + 2 * k, |x, y| {
                image::Rgb([(x * 7 + k) as u8, (y * 11) as u8, ((x + y) * 3) as u8])
            });
            std::fs::create_dir_all(dir.join("d/c")).unwrap();
            let rel = format!("d/c/{k}.png");
            img.save(dir.join(&rel)).unwrap();
            paths.push(rel);
        }
        Arc::new(ImageSource::new(dir, &paths, 5, Preprocess::vl2v(16)).unwrap())
    }

    /// In the trainer's order (step t+1 prefetched before step t is taken), every batch is made once: the
    /// prefetched one is used, not made again.
    #[test]
    fn the_trainers_order_makes_each_batch_once() {
        let dir = tempfile::tempdir().unwrap();
        let images = source(dir.path());
        let steps: Vec<Picks> = (0..5).map(|t| vec![(t, 1), ((t + 2) % 6, 0)]).collect();
        for workers in [0, 2] {
            let mut loader = Loader::new(Arc::clone(&images), workers).unwrap();
            for t in 0..steps.len() {
                if let Some(next) = steps.get(t + 1) {
                    loader.prefetch(next);
                }
                assert_eq!(
                    loader.batch(&steps[t]).unwrap(),
                    images.pixels(&steps[t]).unwrap()
                );
            }
            assert_eq!(
                loader.made.load(Ordering::Relaxed),
                steps.len(),
                "{workers} workers"
            );
        }
    }

    /// Every worker count gives the synchronous batches: prefetched, asked for without a prefetch, after
    /// a prefetch of other picks (dropped), and pipelined.
    #[test]
    fn batches_do_not_depend_on_workers_or_prefetching() {
        let dir = tempfile::tempdir().unwrap();
        let images = source(dir.path());
        let steps: Vec<Picks> = vec![
            vec![(0, 1), (3, 2), (5, 0), (0, 1)],
            vec![(2, 0), (1, 3), (4, 1), (5, 2)],
            vec![(3, 3), (3, 0), (1, 1), (2, 2)],
        ];
        let want: Vec<Vec<f32>> = steps.iter().map(|p| images.pixels(p).unwrap()).collect();
        for workers in [0, 1, 3] {
            let mut loader = Loader::new(Arc::clone(&images), workers).unwrap();
            assert_eq!(loader.batch(&steps[0]).unwrap(), want[0], "{workers}");
            loader.prefetch(&steps[1]);
            assert_eq!(loader.batch(&steps[1]).unwrap(), want[1], "{workers}");
            loader.prefetch(&steps[0]);
            assert_eq!(loader.batch(&steps[2]).unwrap(), want[2], "{workers}");
            let mut got = Vec::new();
            loader
                .pipelined(&steps, |i, pixels| {
                    got.push((i, pixels));
                    Ok(())
                })
                .unwrap();
            let order: Vec<usize> = got.iter().map(|(i, _)| *i).collect();
            assert_eq!(order, [0, 1, 2]);
            for (i, pixels) in got {
                assert_eq!(pixels, want[i], "{workers} workers, chunk {i}");
            }
        }
    }

    /// A batch whose image cannot be read fails with its path, prefetched or not.
    #[test]
    fn a_missing_image_fails_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let images = source(dir.path());
        std::fs::remove_file(dir.path().join("d/c/4.png")).unwrap();
        for workers in [0, 2] {
            let mut loader = Loader::new(Arc::clone(&images), workers).unwrap();
            loader.prefetch(&[(4, 0)]);
            let err = format!("{:#}", loader.batch(&[(4, 0)]).unwrap_err());
            assert!(err.contains("4.png"), "{err}");
        }
    }
}

/// Throughput of the loader alone, timed as `tests/bench/loader_torch.py` times a PyTorch `DataLoader`
/// doing the same work (decode, DomainBed's augmentation of a drawn view, squash to 224² bilinear,
/// ImageNet normalisation): run by tests/bench/run_loader_bench.sh with `VL2V_LOADER_IMAGES` (a folder of
/// JPEGs) and `VL2V_LOADER_WORKERS`. Every image once, in batches of 32, each batch prefetched while the
/// previous one is handed over.
#[cfg(test)]
mod bench {
    use super::*;
    use vl2v::image::Preprocess;

    #[test]
    #[ignore = "benchmark: tests/bench/run_loader_bench.sh"]
    fn loader_throughput() {
        let root = std::path::PathBuf::from(std::env::var("VL2V_LOADER_IMAGES").unwrap());
        let workers: usize = std::env::var("VL2V_LOADER_WORKERS").map_or(2, |w| w.parse().unwrap());
        let mut paths = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "jpg") {
                    let rel = path
                        .strip_prefix(&root)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string();
                    paths.push(rel);
                }
            }
        }
        paths.sort();
        let images = Arc::new(ImageSource::new(&root, &paths, 0, Preprocess::vl2v(224)).unwrap());
        let batches: Vec<Picks> = (0..paths.len())
            .map(|i| (i, 1 + i % 8))
            .collect::<Vec<_>>()
            .chunks(32)
            .map(<[_]>::to_vec)
            .collect();
        let mut loader = Loader::new(images, workers).unwrap();
        let started = std::time::Instant::now();
        let mut checksum = 0.0f64;
        for (i, picks) in batches.iter().enumerate() {
            if let Some(next) = batches.get(i + 1) {
                loader.prefetch(next);
            }
            let pixels = loader.batch(picks).unwrap();
            checksum += f64::from(pixels[0]);
        }
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "loader-bench {}",
            serde_json::json!({"images": paths.len(), "workers": workers, "seconds": seconds,
                "images_per_s": paths.len() as f64 / seconds, "checksum": checksum})
        );
    }
}
