"""VGGT's training losses: camera loss and confidence-aware depth and point losses with gradient terms.

Written from the VGGT paper (Wang et al., CVPR 2025, Sec. 3.4) and the released training code
(``training/loss.py`` and ``training/config/default.yaml`` of facebookresearch/vggt), with these
settings and choices:

* **Camera**: for each of the camera head's refinement iterations k = 1..K, the L1 error of the 9-d
  encoding split into translation (3, clamped at 100 per element), quaternion (4) and field of view
  (2), each averaged over frames and elements; iteration k weighs ``gamma ** (K - k)`` (gamma 0.6: the
  last iteration counts most), the weighted sum is divided by K; the total is
  ``translation + rotation + 0.5 * fov``. The paper says Huber; the released code uses L1 ("more stable
  than smooth l1"), and so do we.
* **Depth and points** (``confidence_regression_loss``), over pixels with ground truth: with the
  per-pixel error e = ||pred - gt|| (Euclidean over the channels: |d| for depth, the 3-d distance for
  points) and the predicted confidence c (> 1),

      conf term     mean(c * e - alpha * log c)                     alpha = 0.2
      plain term    mean(e)                                         (the released code adds it too)
      gradient term mean over 4 scales (every 2**s-th pixel) of
                    sum over neighbouring valid pixel pairs and channels of
                    c * |delta(pred - gt)| - alpha * log c,  divided by (valid pixels x channels)

  where delta is the difference between horizontal (vertical) neighbours and c the confidence of the
  right (lower) pixel of the pair; gradients are clamped at 100. As in the released depth config, the
  conf and plain terms keep only values below their 98th percentile (outlier pixels) when there are
  more than 1000. The loss is the sum of the three terms.
* **Total**: ``5 * camera + depth + point`` (the released weights: camera 5, depth 1; the released
  default config switches the point loss off and, when on, uses a surface-normal gradient term; we
  train the point head with the same gradient term as depth, as the paper's formula does).
* **Relative pose** (ours, off by default; ``relative_pose_loss``): for every ordered frame pair (i, j)
  the geodesic angle between predicted and true relative rotations ``R_i R_j^T`` plus the angle between
  predicted and true relative translations ``t_i - R_i R_j^T t_j`` as directions (pairs with a true
  baseline below ``pair_min_baseline`` left out of the direction term), in radians, over the head's
  iterations weighted as the camera loss. Why: after the normalisation one frame step moves the camera by
  0.02-0.07 units, so the L1 of the translation cannot tell a flipped direction from a right one; angles
  are scale-free, are what the pose metric scores, and give S (S - 1) signals per window (Reloc3r's pose
  loss; Rockwell et al. 2022, relative-pose ViTs).

Differences from the released code, both deliberate: the ``-alpha log c`` part of the gradient term is
summed over valid pixel pairs only (the released code also adds it at invalid pixels, such as the sky,
where it only pushes confidence up); frames are not dropped for having fewer than 100 valid pixels
(the generated scenes always show floor or walls).

Ground truth is expected normalised as the training code does (``dataset.normalize_window``): the
first camera is the world origin and the scene is divided by the mean distance of its valid points
from it; predictions are not normalised (the model learns that frame and scale).
"""

from dataclasses import dataclass
from typing import Dict, Sequence

import torch

from ..geometry import extri_intri_to_pose_encoding, quat_to_mat

TRANSLATION_CLAMP = 100.0
GRADIENT_CLAMP = 100.0
QUANTILE_MIN_ELEMENTS = 1000


@dataclass(frozen=True)
class LossWeights:
    """Weights of the training loss (defaults: the released VGGT training configuration)."""

    camera: float = 5.0
    depth: float = 1.0
    point: float = 1.0
    iteration_gamma: float = 0.6   # weight of camera refinement iteration k of K: gamma ** (K - k)
    translation: float = 1.0
    rotation: float = 1.0
    fov: float = 0.5
    alpha: float = 0.2             # confidence regulariser: - alpha * log c
    gradient_scales: int = 4
    valid_quantile: float = 0.98   # drop conf/plain values above this quantile; 1 keeps all
    # Auxiliary correspondence losses (``correspondence``; 0 = off, as in VGGT's released training).
    flow: float = 0.0              # flow-to-frame-0 regression from the patch tokens of one global block
    attention: float = 0.0         # supervision of one head's attention from frames >= 1 to frame 0
    correspondence_block: int = 2  # the global block both read
    attention_head: int = 0
    attention_all_keys: bool = False  # softmax over every key of the block, not only frame 0's patches
    camera_points: float = 0.0     # each patch's 3D point in its own camera, read from an early global block
    camera_points_block: int = 1
    frame0_points: float = 0.0     # the same point in frame 0's camera, read from a later global block
    frame0_points_block: int = 4
    pair: float = 0.0              # relative-pose angles of every ordered frame pair (relative_pose_loss)
    pair_min_baseline: float = 0.01  # true pair baselines (normalised units) below this: no direction term

    @property
    def probe_weights(self) -> Dict[str, float]:
        """The weights of the losses ``correspondence.CorrespondenceProbe`` computes."""
        return {"flow": self.flow, "attention": self.attention, "camera_points": self.camera_points,
                "frame0_points": self.frame0_points}

    @property
    def dense(self) -> bool:
        """Whether the depth or point head is trained (otherwise the forward pass can skip them)."""
        return bool(self.depth or self.point)


def camera_loss(pose_enc_list: Sequence[torch.Tensor], gt_pose_enc: torch.Tensor,
                weights: LossWeights = LossWeights()) -> Dict[str, torch.Tensor]:
    """``pose_enc_list``: the head's K iterations, each [B, S, 9]; ``gt_pose_enc`` [B, S, 9].

    Returns ``camera`` (the weighted total) and its parts ``translation``, ``rotation``, ``fov``.
    """
    count = len(pose_enc_list)
    parts = {"translation": 0.0, "rotation": 0.0, "fov": 0.0}
    for index, pred in enumerate(pose_enc_list):
        weight = weights.iteration_gamma ** (count - 1 - index)
        error = (pred - gt_pose_enc).abs()
        parts["translation"] = parts["translation"] + weight * error[..., :3].clamp(max=TRANSLATION_CLAMP).mean()
        parts["rotation"] = parts["rotation"] + weight * error[..., 3:7].mean()
        parts["fov"] = parts["fov"] + weight * error[..., 7:].mean()
    parts = {name: value / count for name, value in parts.items()}
    total = (weights.translation * parts["translation"] + weights.rotation * parts["rotation"]
             + weights.fov * parts["fov"])
    return {"camera": total, **parts}


def _angle(sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """atan2 of a sine given by a vector's norm (unit-scale vectors): padded by 1e-12 under the square root
    so that the norm's gradient stays finite where the vector vanishes (an exact prediction)."""
    return torch.atan2((sin.square().sum(-1) + 1e-12).sqrt(), cos)


def relative_pose_loss(pose_enc_list: Sequence[torch.Tensor], gt_extrinsics: torch.Tensor,
                       weights: LossWeights = LossWeights()) -> Dict[str, torch.Tensor]:
    """Angles of the relative poses of every ordered frame pair (see the module docstring).

    ``pose_enc_list``: the head's K iterations, each [B, S, 9]; ``gt_extrinsics`` [B, S, 3, 4]
    (camera-from-world). Returns ``pair`` (the weighted total, radians), ``pair_rotation`` and
    ``pair_translation`` (mean angles over pairs, radians).
    """
    frames = gt_extrinsics.shape[1]
    first, second = torch.where(~torch.eye(frames, dtype=torch.bool, device=gt_extrinsics.device))

    def relative(extrinsics):  # E_i E_j^-1 of every ordered pair: rotation [B, P, 3, 3], translation [B, P, 3]
        rotation, translation = extrinsics[..., :3], extrinsics[..., 3]
        pair_rotation = rotation[:, first] @ rotation[:, second].transpose(-1, -2)
        return pair_rotation, translation[:, first] - (pair_rotation @ translation[:, second, :, None])[..., 0]

    gt_rotation, gt_translation = relative(gt_extrinsics.float())
    baseline = gt_translation.norm(dim=-1, keepdim=True)
    directed = baseline[..., 0] > weights.pair_min_baseline
    gt_direction = gt_translation / baseline.clamp(min=1e-12)
    count = len(pose_enc_list)
    parts = {"pair_rotation": 0.0, "pair_translation": 0.0}
    for index, pose_enc in enumerate(pose_enc_list):
        weight = weights.iteration_gamma ** (count - 1 - index)
        pose_enc = pose_enc.float()
        rotation, translation = relative(torch.cat([quat_to_mat(pose_enc[..., 3:7]), pose_enc[..., :3, None]], -1))
        error = gt_rotation.transpose(-1, -2) @ rotation
        skew = error - error.transpose(-1, -2)
        rotation_angle = _angle(torch.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], -1) / 2,
                                (error.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2)
        direction = translation / (translation.norm(dim=-1, keepdim=True) + 1e-8)
        direction_angle = _angle(torch.linalg.cross(direction, gt_direction), (direction * gt_direction).sum(-1))
        parts["pair_rotation"] = parts["pair_rotation"] + weight * rotation_angle.mean()
        parts["pair_translation"] = parts["pair_translation"] \
            + weight * (direction_angle * directed).sum() / directed.sum().clamp(min=1)
    parts = {name: value / count for name, value in parts.items()}
    return {"pair": parts["pair_rotation"] + parts["pair_translation"], **parts}


def below_quantile(values: torch.Tensor, quantile: float) -> torch.Tensor:
    """The values (1-d) below their ``quantile`` (nearest rank), when there are more than
    ``QUANTILE_MIN_ELEMENTS`` of them and enough remain; otherwise all of them."""
    if quantile >= 1 or values.numel() <= QUANTILE_MIN_ELEMENTS:
        return values
    rank = round(quantile * (values.numel() - 1)) + 1
    threshold = values.detach().kthvalue(rank).values
    kept = values[values < threshold]
    return kept if kept.numel() > QUANTILE_MIN_ELEMENTS else values


def gradient_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, conf: torch.Tensor,
                  alpha: float) -> torch.Tensor:
    """Confidence-weighted L1 of neighbour differences of the error map at one scale.

    pred, gt [N, H, W, C]; valid [N, H, W] bool; conf [N, H, W]. See the module docstring.
    """
    channels = pred.shape[-1]
    mask = valid[..., None].to(pred.dtype)
    error = (pred - gt) * mask
    total = pred.new_zeros(())
    for dim in (2, 1):  # horizontal neighbours, then vertical
        length = pred.shape[dim]
        first, second = (slice(None),) * dim + (slice(0, length - 1),), (slice(None),) * dim + (slice(1, length),)
        pair = valid[first] & valid[second]
        change = (error[second] - error[first]).abs().clamp(max=GRADIENT_CLAMP)
        pair_conf = conf[second][pair]
        total = total + (pair_conf[:, None] * change[pair]).sum() - alpha * channels * pair_conf.log().sum()
    count = valid.sum() * channels
    return total / count if count > 0 else total


def confidence_regression_loss(pred: torch.Tensor, gt: torch.Tensor, valid: torch.Tensor, conf: torch.Tensor,
                               weights: LossWeights = LossWeights()) -> Dict[str, torch.Tensor]:
    """Confidence-aware regression of a dense map with gradient term (VGGT's depth and point loss).

    pred, gt [B, S, H, W, C]; valid [B, S, H, W] bool; conf [B, S, H, W] (> 0). Returns ``conf``,
    ``plain`` and ``gradient`` terms and their sum ``total``.
    """
    if pred.shape != gt.shape or pred.shape[:4] != valid.shape or valid.shape != conf.shape:
        raise ValueError(f"shapes do not match: pred {tuple(pred.shape)}, gt {tuple(gt.shape)}, valid "
                         f"{tuple(valid.shape)}, conf {tuple(conf.shape)}")
    if not valid.any():
        zero = (pred * 0).sum()
        return {"conf": zero, "plain": zero, "gradient": zero, "total": zero}
    error = (pred - gt)[valid].norm(dim=-1)
    confidence = conf[valid]
    conf_term = below_quantile(confidence * error - weights.alpha * confidence.log(), weights.valid_quantile).mean()
    plain_term = below_quantile(error, weights.valid_quantile).mean()
    flat = (-1,) + tuple(pred.shape[2:])
    pred, gt = pred.reshape(flat), gt.reshape(flat)
    valid, conf = valid.reshape(flat[:-1]), conf.reshape(flat[:-1])
    gradient_term = sum(gradient_loss(pred[:, ::2 ** s, ::2 ** s], gt[:, ::2 ** s, ::2 ** s],
                                      valid[:, ::2 ** s, ::2 ** s], conf[:, ::2 ** s, ::2 ** s], weights.alpha)
                        for s in range(weights.gradient_scales)) / weights.gradient_scales
    return {"conf": conf_term, "plain": plain_term, "gradient": gradient_term,
            "total": conf_term + plain_term + gradient_term}


def vggt_loss(predictions: Dict[str, torch.Tensor], target: Dict[str, torch.Tensor],
              weights: LossWeights = LossWeights()) -> Dict[str, torch.Tensor]:
    """The training objective ``loss`` and its parts for one batch.

    predictions: the model's training-mode output (``pose_enc_list``, ``depth``, ``depth_conf``,
    ``world_points``, ``world_points_conf``; heads that are absent are left out). target
    (``dataset.normalize_window``): ``images`` [B, S, 3, H, W], ``extrinsics`` [B, S, 3, 4],
    ``intrinsics`` [B, S, 3, 3], ``depth`` [B, S, H, W], ``world_points`` [B, S, H, W, 3], ``valid``
    [B, S, H, W].
    """
    parts: Dict[str, torch.Tensor] = {}
    loss = 0.0
    if "pose_enc_list" in predictions:
        gt_pose = extri_intri_to_pose_encoding(target["extrinsics"], target["intrinsics"],
                                               target["images"].shape[-2:])
        camera = camera_loss(predictions["pose_enc_list"], gt_pose, weights)
        parts.update({f"camera_{k}" if k != "camera" else k: v for k, v in camera.items()})
        loss = loss + weights.camera * camera["camera"]
        if weights.pair and target["extrinsics"].shape[1] > 1:
            pair = relative_pose_loss(predictions["pose_enc_list"], target["extrinsics"], weights)
            parts.update(pair)
            loss = loss + weights.pair * pair["pair"]
    for name, key, gt_key, weight in (("depth", "depth", "depth", weights.depth),
                                      ("point", "world_points", "world_points", weights.point)):
        if key not in predictions:
            continue
        gt = target[gt_key][..., None] if gt_key == "depth" else target[gt_key]
        dense = confidence_regression_loss(predictions[key], gt, target["valid"], predictions[f"{key}_conf"],
                                           weights)
        parts.update({f"{name}_{k}" if k != "total" else name: v for k, v in dense.items()})
        loss = loss + weight * dense["total"]
    parts["loss"] = loss
    return parts
