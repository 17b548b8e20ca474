//! Push, fetch and clone through `mlv serve` on a loopback port.
