//! Sealing parameters and their presets.

use serde::{Deserialize, Serialize};

use crate::error::{PorepError, Result};

/// Most layers a sealing may use (a column of labels must fit one 1 KiB chunk).
pub const MAX_LAYERS: u32 = 32;
/// Most DRG parents per node.
pub const MAX_DRG_DEGREE: u32 = 16;
/// Most expander parents per node (with 16 DRG parents a label's input still fits one chunk).
pub const MAX_EXPANDER_DEGREE: u32 = 14;
/// Most challenges in one seal proof.
pub const MAX_SEAL_CHALLENGES: u32 = 512;
/// Most challenges in one window proof.
pub const MAX_WINDOW_CHALLENGES: u32 = 1024;
/// Bytes of a label's fixed prefix: replica id, layer (u32), node (u64).
pub const LABEL_PREFIX_LEN: usize = 32 + 4 + 8;
/// Fewest nodes a sector may have: one 16 KiB chunk group of column hashes,
/// so a group (what an opening reads) never spans two sectors.
pub const MIN_SECTOR_NODES: u64 = 512;

/// Parameters recorded before sectors existed sealed every piece as one
/// graph: one sector as large as a piece can be. Kept out of the encoding,
/// so such records encode (and hash) as they always did.
fn whole_piece() -> u64 {
    crate::graph::MAX_NODES
}

fn is_whole_piece(nodes: &u64) -> bool {
    *nodes == whole_piece()
}

/// The shape of a sealing: layers, graph degrees, sector size and challenge
/// counts.
///
/// A piece is cut into sectors of `sector_nodes` nodes (the last one may be
/// shorter), each labelled over its own graph, fully determined by `(sector
/// length, drg_degree, expander_degree)`; `layers` sets the sequential work.
/// Sealing, unsealing and proving hold one sector's layers at a time, so
/// their memory is bounded by the sector, not the piece.
///
/// Challenge counts set soundness: a replica with a fraction `ε` of wrong labels passes `C` seal challenges with
/// probability `(1 − ε)^C`, and a provider that dropped a fraction `f` of its
/// replica survives one window with probability `(1 − f)^N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealParams {
    /// Number of labelling layers `L`.
    pub layers: u32,
    /// DRG parents `d` per node in the same layer, including `i − 1`.
    pub drg_degree: u32,
    /// Expander parents `e` per node in the previous layer (none in layer 1).
    pub expander_degree: u32,
    /// Challenged nodes `C` in a seal proof.
    pub seal_challenges: u32,
    /// Challenged nodes `N` in a window proof.
    pub window_challenges: u32,
    /// Nodes per sector: a power of two, at least [`MIN_SECTOR_NODES`];
    /// absent in parameters recorded before sectors, which sealed each
    /// piece as one graph ([`crate::graph::MAX_NODES`]).
    #[serde(default = "whole_piece", skip_serializing_if = "is_whole_piece")]
    pub sector_nodes: u64,
}

impl SealParams {
    /// Fast parameters for development networks and tests: a 64 MiB piece
    /// seals in a few seconds on one core. Two layers give almost no
    /// sequential-work guarantee; do not use them where that matters.
    /// 16 MiB sectors: sealing holds 32 MiB of labels and 24 MiB of parent
    /// tables, whatever the piece size.
    pub const fn devnet() -> Self {
        Self {
            layers: 2,
            drg_degree: 3,
            expander_degree: 3,
            seal_challenges: 30,
            window_challenges: 10,
            sector_nodes: 1 << 19,
        }
    }

    /// Parameters close to Filecoin's SDR: 11 layers, 6 DRG + 8 expander
    /// parents. 176 seal challenges is Filecoin's interactive-PoRep count for
    /// 32 GiB sectors; 10 window challenges per replica is Filecoin's
    /// WindowPoSt count, repeated every proving window. 8 MiB sectors:
    /// sealing holds 88 MiB of labels (11 layers) and at most 28 MiB of
    /// parent tables, whatever the piece size. (Filecoin's sectors are 32
    /// GiB, sealed on machines with hundreds of GiB; crowdstore's providers
    /// are home machines. What a small sector gives away: see
    /// docs/ARCHITECTURE.md, "Sealing in sectors".)
    pub const fn production() -> Self {
        Self {
            layers: 11,
            drg_degree: 6,
            expander_degree: 8,
            seal_challenges: 176,
            window_challenges: 10,
            sector_nodes: 1 << 18,
        }
    }

    /// Check every field against its cap.
    pub fn validate(&self) -> Result<()> {
        if self.layers == 0 || self.layers > MAX_LAYERS {
            return Err(PorepError::InvalidParams("layers must be in 1..=32"));
        }
        if self.drg_degree == 0 || self.drg_degree > MAX_DRG_DEGREE {
            return Err(PorepError::InvalidParams("drg_degree must be in 1..=16"));
        }
        if self.expander_degree > MAX_EXPANDER_DEGREE {
            return Err(PorepError::InvalidParams("expander_degree must be at most 14"));
        }
        if self.seal_challenges == 0 || self.seal_challenges > MAX_SEAL_CHALLENGES {
            return Err(PorepError::InvalidParams("seal_challenges must be in 1..=512"));
        }
        if self.window_challenges == 0 || self.window_challenges > MAX_WINDOW_CHALLENGES {
            return Err(PorepError::InvalidParams("window_challenges must be in 1..=1024"));
        }
        if !self.sector_nodes.is_power_of_two()
            || self.sector_nodes < MIN_SECTOR_NODES
            || self.sector_nodes > crate::graph::MAX_NODES
        {
            return Err(PorepError::InvalidParams(
                "sector_nodes must be a power of two in 512..=2^32",
            ));
        }
        Ok(())
    }

    /// Bytes hashed for one label in layers ≥ 2 (layer 1 omits the expander parents).
    pub fn label_input_len(&self) -> usize {
        LABEL_PREFIX_LEN + 32 * (self.drg_degree + self.expander_degree) as usize
    }

    /// Labels computed to seal a piece of `nodes` nodes.
    pub fn labels_for(&self, nodes: u64) -> u64 {
        nodes * u64::from(self.layers)
    }

    /// Bytes of one sector (of the piece, and of each layer of labels).
    pub fn sector_bytes(&self) -> u64 {
        self.sector_nodes * 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_inputs_fit_one_chunk() {
        for p in [SealParams::devnet(), SealParams::production()] {
            p.validate().unwrap();
            assert!(p.label_input_len() <= blake3::CHUNK_LEN);
        }
        assert_eq!(SealParams::production().layers, 11);
        let worst = SealParams {
            layers: MAX_LAYERS,
            drg_degree: MAX_DRG_DEGREE,
            expander_degree: MAX_EXPANDER_DEGREE,
            ..SealParams::production()
        };
        assert!(worst.label_input_len() <= blake3::CHUNK_LEN);
        assert!(32 * MAX_LAYERS as usize <= blake3::CHUNK_LEN);
    }

    /// Parameters recorded before sectors decode as one sector per piece
    /// (how they were sealed) and encode back without the field.
    #[test]
    fn parameters_from_before_sectors_keep_one_graph_per_piece() {
        #[derive(Serialize)]
        struct Old {
            layers: u32,
            drg_degree: u32,
            expander_degree: u32,
            seal_challenges: u32,
            window_challenges: u32,
        }
        let old = Old {
            layers: 2,
            drg_degree: 3,
            expander_degree: 3,
            seal_challenges: 30,
            window_challenges: 10,
        };
        let json = serde_json::to_string(&old).unwrap();
        let p: SealParams = serde_json::from_str(&json).unwrap();
        assert_eq!(p.sector_nodes, crate::graph::MAX_NODES);
        p.validate().unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), json);
        let now = serde_json::to_string(&SealParams::devnet()).unwrap();
        assert!(now.contains("sector_nodes"), "{now}");
    }

    #[test]
    fn out_of_range_params_are_rejected() {
        let bad = [
            SealParams {
                layers: 0,
                ..SealParams::devnet()
            },
            SealParams {
                layers: 33,
                ..SealParams::devnet()
            },
            SealParams {
                drg_degree: 0,
                ..SealParams::devnet()
            },
            SealParams {
                expander_degree: 15,
                ..SealParams::devnet()
            },
            SealParams {
                seal_challenges: 0,
                ..SealParams::devnet()
            },
            SealParams {
                window_challenges: 5000,
                ..SealParams::devnet()
            },
            SealParams {
                sector_nodes: 1000,
                ..SealParams::devnet()
            },
            SealParams {
                sector_nodes: 256,
                ..SealParams::devnet()
            },
        ];
        for p in bad {
            assert!(matches!(p.validate(), Err(PorepError::InvalidParams(_))), "{p:?}");
        }
    }
}
