//! What the algorithms optimise and predict with: the losses on cached features with analytic gradients
//! ([`analytic_losses`]), the same losses as candle graphs for training a backbone ([`graph_losses`]), the trainable linear head ([`linear_head`]) and
//! RISE's and SCMD's losses ([`rise_loss`], [`scmd_loss`]). The zero-shot head is the library's
//! ([`vl2v::zeroshot`]): the demo lab's pretraining measures its models with it too.

pub mod analytic_losses;
#[cfg(test)]
mod fixture;
pub mod graph_losses;
pub mod linear_head;
pub mod rise_loss;
pub mod scmd_loss;
