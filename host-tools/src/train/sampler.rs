//! The order a run visits its training items: a seeded shuffle at the start of every epoch, and
//! the one random stream that augmentation draws from too. Its [`SamplerState`] (the epoch's
//! order, the position in it, the stream's position) is what a checkpoint keeps, so that a
//! resumed run visits the same items with the same augmentation as an uninterrupted one.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Seeded epochs over `n` items.
#[derive(Debug, Clone)]
pub struct Sampler {
    rng: ChaCha8Rng,
    order: Vec<u32>,
    cursor: usize,
    epoch: usize,
}

/// Where a [`Sampler`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerState {
    /// This epoch's order.
    pub order: Vec<u32>,
    /// Items of it already visited.
    pub cursor: usize,
    /// Epochs begun.
    pub epoch: usize,
    /// The random stream's position (ChaCha's word position).
    pub word_pos: u128,
}

impl Sampler {
    /// Epochs over `n` items (at most `u32::MAX`) shuffled from `seed`.
    pub fn new(n: usize, seed: u64) -> Self {
        let order = (0..n as u32).collect::<Vec<_>>();
        // Empty cursor at the end: the first item shuffles.
        Sampler { rng: ChaCha8Rng::seed_from_u64(seed), cursor: order.len(), order, epoch: 0 }
    }

    /// A sampler of `n` items and `seed` put where `state` says, or `None` if the state cannot be
    /// one of theirs (an order that is not a permutation of `n` items, a cursor past it).
    pub fn restore(n: usize, seed: u64, state: SamplerState) -> Option<Self> {
        let mut seen = vec![false; n];
        let permutation = state.order.len() == n
            && state.order.iter().all(|&i| (i as usize) < n && !std::mem::replace(&mut seen[i as usize], true));
        if !permutation || state.cursor > n {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_word_pos(state.word_pos);
        Some(Sampler { rng, order: state.order, cursor: state.cursor, epoch: state.epoch })
    }

    /// The next item (a new epoch's shuffle first when this one is used up).
    pub fn next_item(&mut self) -> usize {
        if self.cursor == self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.cursor = 0;
            self.epoch += 1;
        }
        self.cursor += 1;
        self.order[self.cursor - 1] as usize
    }

    /// The stream augmentation draws from (the same one that shuffles).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Epochs visited to the end.
    pub fn epochs_done(&self) -> usize {
        match self.cursor == self.order.len() {
            true => self.epoch,
            false => self.epoch.saturating_sub(1),
        }
    }

    /// Where it is.
    pub fn state(&self) -> SamplerState {
        SamplerState {
            order: self.order.clone(),
            cursor: self.cursor,
            epoch: self.epoch,
            word_pos: self.rng.get_word_pos(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// Draws `k` items, each followed by one augmentation draw, as a training loop does.
    fn draw(s: &mut Sampler, k: usize) -> Vec<(usize, u32)> {
        (0..k).map(|_| (s.next_item(), s.rng().random::<u32>())).collect()
    }

    #[test]
    fn epochs_are_permutations_and_a_restored_sampler_goes_on_identically() {
        let mut s = Sampler::new(7, 3);
        let first = draw(&mut s, 7);
        let mut items: Vec<usize> = first.iter().map(|d| d.0).collect();
        items.sort();
        assert_eq!(items, (0..7).collect::<Vec<_>>());
        assert_eq!(s.epochs_done(), 1);
        draw(&mut s, 3);
        assert_eq!(s.epochs_done(), 1);
        let mut resumed = Sampler::restore(7, 3, s.state()).expect("its own state");
        assert_eq!(draw(&mut s, 20), draw(&mut resumed, 20));
    }

    #[test]
    fn states_of_other_runs_are_refused() {
        let mut s = Sampler::new(5, 1);
        draw(&mut s, 2);
        let state = s.state();
        assert!(Sampler::restore(6, 1, state.clone()).is_none(), "other count");
        let mut dup = state.clone();
        dup.order[0] = dup.order[1];
        assert!(Sampler::restore(5, 1, dup).is_none(), "not a permutation");
        let mut past = state.clone();
        past.cursor = 6;
        assert!(Sampler::restore(5, 1, past).is_none(), "cursor past the end");
        let mut big = state;
        big.order[0] = 99;
        assert!(Sampler::restore(5, 1, big).is_none(), "item out of range");
    }
}
