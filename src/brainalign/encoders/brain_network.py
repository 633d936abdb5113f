"""Network-transformer brain encoder (BNT-style): FC rows as node features, orthonormal cluster readout.

Follows the Brain Network Transformer's design (Kan et al., 2022): each ROI's connectivity row is its feature
vector (no positional encoding), transformer encoder layers mix the nodes, and an orthonormal-clustering
readout (OCRead, a DEC-style soft assignment to frozen Gram–Schmidt-orthonormalised centres) pools N nodes
into M cluster tokens.  NeuroLIP adds :class:`ClusterNodeAttention`, where cluster tokens query the node
embeddings, giving local image tokens and an M×N attention map.
"""

from __future__ import annotations

import torch
from torch import nn

from brainalign.errors import BrainAlignError


def orthonormal_rows(n_rows: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n_rows, dim) Xavier-initialised rows made orthonormal (Gram–Schmidt through QR); needs n_rows <= dim."""
    if n_rows > dim:
        raise BrainAlignError(f"cannot make {n_rows} orthonormal cluster centres in {dim} dimensions")
    w = torch.empty(n_rows, dim)
    nn.init.xavier_uniform_(w, generator=generator)
    q, r = torch.linalg.qr(w.T)  # (dim, n_rows): orthonormal columns spanning the rows of w
    return (q * torch.sign(torch.diagonal(r))).T.contiguous()


class OrthonormalClusterReadout(nn.Module):
    """OCRead: soft assignment of N node embeddings to M orthonormal centres, then weighted pooling.

    A small MLP re-encodes the flattened nodes first (as BNT's DEC does, here as a residual so the cluster
    tokens differ from the start); assignment ``softmax((x·Cᵀ)² / ‖C‖)``.

    Parameters
    ----------
    n_nodes, dim : int
        N and E.
    n_clusters : int
        M (<= E).
    hidden : int
        Width of the re-encoding MLP (BNT: 32).
    freeze_centers : bool
        Keep the centres fixed (BNT default).
    """

    def __init__(self, n_nodes: int, dim: int, n_clusters: int, hidden: int = 32, freeze_centers: bool = True):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_nodes * dim, hidden), nn.LeakyReLU(),
                                     nn.Linear(hidden, hidden), nn.LeakyReLU(),
                                     nn.Linear(hidden, n_nodes * dim))
        self.centers = nn.Parameter(orthonormal_rows(n_clusters, dim), requires_grad=not freeze_centers)

    def forward(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """nodes (B, N, E) → cluster tokens (B, M, E) and assignment (B, N, M)."""
        B, N, E = nodes.shape
        # Residual re-encoding: BNT feeds the MLP output alone to the assignment, but at initialisation that
        # output is tiny, the assignment is uniform and all M cluster tokens are the same vector — a symmetric
        # point that attention over the clusters (NeuroLIP's TTCA) never leaves.
        encoded = nodes + self.encoder(nodes.reshape(B, N * E)).reshape(B, N, E)
        logits = (encoded @ self.centers.T) ** 2 / self.centers.norm(dim=-1)
        assignment = torch.softmax(logits, dim=-1)
        return assignment.transpose(1, 2) @ encoded, assignment


class BrainNetworkEncoder(nn.Module):
    """BNT body: (B, N, N) connectivity → node embeddings, cluster tokens and their assignment.

    Parameters
    ----------
    n_rois : int
        N.
    n_layers : int
        Transformer encoder layers (BNT: 2; pooling after the last).
    n_heads : int
        Attention heads (BNT: 4).
    ff_dim : int
        Feed-forward width (BNT: 1024).
    n_clusters : int
        M cluster tokens (BNT: 100), capped at the embedding size.
    embed_dim : int, optional
        Node embedding size E.  Default N (no projection, as BNT); when N is not divisible by ``n_heads`` the
        rows are projected to the next multiple of ``n_heads``.
    dropout : float
    """

    def __init__(self, n_rois: int, n_layers: int = 2, n_heads: int = 4, ff_dim: int = 1024,
                 n_clusters: int = 100, embed_dim: int | None = None, dropout: float = 0.1):
        super().__init__()
        if n_rois < 2:
            raise BrainAlignError(f"n_rois must be >= 2, got {n_rois}")
        if embed_dim is None:
            embed_dim = n_rois if n_rois % n_heads == 0 else n_heads * -(-n_rois // n_heads)
        if embed_dim % n_heads:
            raise BrainAlignError(f"embed_dim {embed_dim} is not divisible by n_heads {n_heads}")
        self.n_rois, self.dim = n_rois, embed_dim
        self.n_clusters = min(n_clusters, embed_dim)
        self.project = nn.Identity() if embed_dim == n_rois else nn.Linear(n_rois, embed_dim)
        layer = nn.TransformerEncoderLayer(embed_dim, n_heads, ff_dim, dropout, batch_first=True)
        self.layers = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.readout = OrthonormalClusterReadout(n_rois, embed_dim, self.n_clusters)

    def forward(self, fc: torch.Tensor) -> dict[str, torch.Tensor]:
        """fc (B, N, N) → {"nodes": (B, N, E), "clusters": (B, M, E), "assignment": (B, N, M)}."""
        if fc.ndim != 3 or fc.shape[1:] != (self.n_rois, self.n_rois):
            raise BrainAlignError(f"expected connectivity of shape (B, {self.n_rois}, {self.n_rois}), got {tuple(fc.shape)}")
        nodes = self.layers(self.project(fc))
        clusters, assignment = self.readout(nodes)
        return {"nodes": nodes, "clusters": clusters, "assignment": assignment}


class ClusterNodeAttention(nn.Module):
    """Cluster tokens attend to node embeddings: local image tokens (B, M, E) and a map (B, M, N).

    Parameters
    ----------
    dim : int
        E.
    n_heads : int
    """

    def __init__(self, dim: int, n_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, clusters: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, weights = self.attention(clusters, nodes, nodes, need_weights=True, average_attn_weights=True)
        return self.norm(clusters + out), weights


class BNTClassifier(nn.Module):
    """BrainNetTF: the encoder plus BNT's readout, Linear(E→8)+LeakyReLU, flatten, MLP 8·M→256→32→2."""

    def __init__(self, n_rois: int, n_classes: int = 2, **encoder_kw):
        super().__init__()
        self.encoder = BrainNetworkEncoder(n_rois, **encoder_kw)
        M = self.encoder.n_clusters
        self.reduce = nn.Sequential(nn.Linear(self.encoder.dim, 8), nn.LeakyReLU())
        self.head = nn.Sequential(nn.Linear(8 * M, 256), nn.LeakyReLU(), nn.Linear(256, 32), nn.LeakyReLU(),
                                  nn.Linear(32, n_classes))

    def forward(self, fc: torch.Tensor) -> torch.Tensor:
        """fc (B, N, N) → logits (B, n_classes)."""
        clusters = self.encoder(fc)["clusters"]
        return self.head(self.reduce(clusters).flatten(1))
