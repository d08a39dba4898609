//! A module's binary head: how it turns the network's outputs into a positive and a negative
//! logit, and the score `sigmoid(pos - neg)` that composition compares.

/// How a module turns the base network's outputs into a positive and a negative logit; its score
/// is `softmax([pos, neg])[0] = sigmoid(pos - neg)`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleHead {
    /// The paper's channeling: positive = the original logit of the class, negative = the mean
    /// of the other classes' logits.
    Channel {
        /// The output of the base that is the module's class.
        class_index: usize,
    },
    /// A one-vs-rest logistic regression on the module's pooled features: positive =
    /// `weight . features + bias`, negative = 0. Scores of modules from different models are
    /// calibrated probabilities, hence comparable.
    Calibrated {
        /// One weight per pooled feature of the base.
        weight: Vec<f32>,
        /// The intercept.
        bias: f32,
    },
}

impl ModuleHead {
    /// The head's name in module metadata.
    pub fn name(&self) -> &'static str {
        match self {
            ModuleHead::Channel { .. } => "channel",
            ModuleHead::Calibrated { .. } => "calibrated",
        }
    }

    /// Bytes the head holds (a calibrated head's weights and bias).
    pub fn resident_bytes(&self) -> u64 {
        match self {
            ModuleHead::Channel { .. } => 0,
            ModuleHead::Calibrated { weight, .. } => 4 * (weight.len() as u64 + 1),
        }
    }

    /// `(positive, negative)` logits from one image's pooled features and base logits.
    pub fn logits(&self, features: &[f32], logits: &[f32]) -> (f32, f32) {
        match self {
            ModuleHead::Channel { class_index } => {
                let pos = logits[*class_index];
                let others = logits.len().saturating_sub(1).max(1) as f32;
                let neg = (logits.iter().sum::<f32>() - pos) / others;
                (pos, neg)
            }
            ModuleHead::Calibrated { weight, bias } => {
                (weight.iter().zip(features).map(|(w, f)| w * f).sum::<f32>() + bias, 0.0)
            }
        }
    }
}

/// `sigmoid(pos - neg)`, computed stably.
pub fn score(pos: f32, neg: f32) -> f32 {
    let z = pos - neg;
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_scores() {
        let h = ModuleHead::Channel { class_index: 1 };
        assert_eq!(h.logits(&[], &[1.0, 4.0, 3.0]), (4.0, 2.0));
        let c = ModuleHead::Calibrated { weight: vec![1.0, -1.0], bias: 0.5 };
        assert_eq!(c.logits(&[2.0, 1.0], &[]), (1.5, 0.0));
        assert!((score(2.0, 0.0) - 0.880797).abs() < 1e-6);
        assert!((score(-2.0, 0.0) - 0.119203).abs() < 1e-6);
        assert!(score(-1000.0, 0.0) >= 0.0 && score(1000.0, 0.0) <= 1.0);
    }
}
