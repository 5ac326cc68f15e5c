"""Fast (randomised) Hadamard transforms along the last dimension.

``hadamard_transform(x)`` computes ``x @ H_n / sqrt(n)`` with ``H_n`` a +-1 Hadamard matrix of order n,
built as a Kronecker product of small factors and applied factor by factor (a few small GEMMs, O(n *
sum of factor sizes) per row) without ever forming the n x n matrix:

* n = 2^m: Sylvester factors, split into two near-square powers of two (1024 = 32 x 32, 4096 = 64 x 64);
* n = K * 2^m with K a Paley order (q + 1 for a prime q = 3 mod 4, or 2(q + 1) for a prime q = 1 mod 4:
  12, 20, 24, 28, 36, 44, 48, 60, ...): H_K (x) H_2^m, so 48 = 12 x 4 and 192 = 12 x 16 work;
* any other n (e.g. 52 or 100) has no Hadamard matrix we can build. ``orthogonal_factors`` then falls back
  to a seeded random orthogonal matrix (QR of a Gaussian): still an exact rotation, but applied as a dense
  O(n^2) matmul.

Backends with the same result: ``kronecker`` (pure torch, any device; the default), ``fht-cpu`` (the
optional ``fht-cpu`` package, powers of two, CPU float32/float64, without autograd; chosen first when
installed: for random Hadamard rotations it measured 1.7x (n = 1024) to 2.7x (4096) faster than the
Kronecker GEMMs on the 2-core CPU, see ``random_hadamard_transform``), ``cuda-fht`` (the
optional ``fast_hadamard_transform`` CUDA package, powers of two) and ``dense`` (the reference, for tests).
"""

import functools
import math
from typing import Callable, Dict, List, Optional, Tuple

import torch


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(math.isqrt(q)) + 1))


def _jacobsthal(q: int) -> torch.Tensor:
    """Q[i, j] = Legendre symbol of (j - i) mod q (q prime)."""
    residues = {(x * x) % q for x in range(1, q)}
    chi = torch.tensor([0] + [1 if a in residues else -1 for a in range(1, q)], dtype=torch.float64)
    index = (torch.arange(q)[None, :] - torch.arange(q)[:, None]) % q
    return chi[index]


def _paley(order: int) -> Optional[torch.Tensor]:
    """A +-1 Hadamard matrix of ``order`` by Paley's constructions, or None."""
    q = order - 1
    if _is_prime(q) and q % 4 == 3:  # Paley I: I + [[0, 1^T], [-1, Q]] (skew part)
        skew = torch.zeros(order, order, dtype=torch.float64)
        skew[0, 1:], skew[1:, 0], skew[1:, 1:] = 1, -1, _jacobsthal(q)
        return torch.eye(order, dtype=torch.float64) + skew
    q = order // 2 - 1
    if order % 2 == 0 and _is_prime(q) and q % 4 == 1:  # Paley II from the symmetric conference matrix
        conference = torch.zeros(q + 1, q + 1, dtype=torch.float64)
        conference[0, 1:], conference[1:, 0], conference[1:, 1:] = 1, 1, _jacobsthal(q)
        plus = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
        minus = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
        return torch.kron(conference, plus) + torch.kron(torch.eye(q + 1, dtype=torch.float64), minus)
    return None


def _sylvester(order: int) -> torch.Tensor:
    matrix = torch.ones(1, 1, dtype=torch.float64)
    while matrix.shape[0] < order:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)], 0)
    return matrix


@functools.lru_cache(maxsize=None)
def hadamard_factors(n: int) -> Optional[Tuple[torch.Tensor, ...]]:
    """+-1 factor matrices (float64, CPU) with kron(*factors) a Hadamard matrix of order n, or None."""
    if n < 1:
        raise ValueError(f"Hadamard order must be positive, got {n}")
    power = n & -n  # largest power of two dividing n
    odd_part = n // power
    if odd_part == 1:
        m = power.bit_length() - 1
        big, small = 1 << ((m + 1) // 2), 1 << (m // 2)
        return tuple(_sylvester(k) for k in (big, small) if k > 1) or (torch.ones(1, 1, dtype=torch.float64),)
    # Smallest Paley order K = odd_part * 2^j (j >= 2, Hadamard orders are multiples of 4) dividing n.
    for j in range(2, power.bit_length()):
        order = odd_part << j
        paley = _paley(order)
        if paley is not None:
            rest = n // order
            return (paley,) + (tuple(_sylvester(k) for k in [rest] if k > 1))
    return None


def is_hadamard_order(n: int) -> bool:
    """True when ``hadamard_factors`` can build H_n (else rotations fall back to a random orthogonal)."""
    return hadamard_factors(n) is not None


def hadamard_matrix(n: int, dtype=torch.float64) -> torch.Tensor:
    """Dense normalised H_n / sqrt(n) (tests and the reference backend only)."""
    factors = hadamard_factors(n)
    if factors is None:
        raise ValueError(f"no Hadamard matrix of order {n} can be built (see module docstring)")
    matrix = functools.reduce(torch.kron, factors)
    return (matrix / math.sqrt(n)).to(dtype)


@functools.lru_cache(maxsize=64)
def _device_factors(n: int, device: str, dtype: torch.dtype) -> Tuple[torch.Tensor, ...]:
    factors = hadamard_factors(n)
    scale = n ** (-0.5 / len(factors))  # spread the 1/sqrt(n) over the factors
    return tuple((f * scale).to(device=device, dtype=dtype) for f in factors)


def _kronecker(x: torch.Tensor) -> torch.Tensor:
    """x [..., n] @ kron(A_1, ..., A_k): view x as [..., n_1, ..., n_k] and apply A_i^T on axis i."""
    n = x.shape[-1]
    factors = _device_factors(n, str(x.device), x.dtype)
    lead = x.shape[:-1]
    sizes = [f.shape[0] for f in factors]
    y = x.reshape(-1, *sizes)
    for axis, factor in enumerate(factors, start=1):
        y = torch.movedim(torch.movedim(y, axis, -1) @ factor, -1, axis)
    return y.reshape(*lead, n)


def _dense(x: torch.Tensor) -> torch.Tensor:
    return x @ hadamard_matrix(x.shape[-1]).to(device=x.device, dtype=x.dtype)


def _fht_cpu(x: torch.Tensor) -> torch.Tensor:
    from fht_cpu import fht  # optional dependency, unnormalised, in place by default

    flat = x.detach().reshape(-1, x.shape[-1]).contiguous()  # the package takes 1-D or 2-D arrays
    out = torch.empty_like(flat)
    fht(flat.numpy(), axis=-1, inplace=False, out=out.numpy())
    return (out * (x.shape[-1] ** -0.5)).reshape(x.shape)


def _cuda_fht(x: torch.Tensor) -> torch.Tensor:
    from fast_hadamard_transform import hadamard_transform as cuda_hadamard  # optional CUDA extension

    return cuda_hadamard(x.contiguous(), scale=x.shape[-1] ** -0.5)


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except Exception:  # a broken optional extension must not break the transform
        return False
    return True


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


# name -> (supports(x) -> bool, function); tried in this order by ``hadamard_transform``.
BACKENDS: Dict[str, Tuple[Callable[[torch.Tensor], bool], Callable[[torch.Tensor], torch.Tensor]]] = {
    "cuda-fht": (lambda x: x.is_cuda and x.dtype in (torch.float16, torch.bfloat16, torch.float32)
                 and _power_of_two(x.shape[-1]) and not x.requires_grad and _importable("fast_hadamard_transform"),
                 _cuda_fht),
    "fht-cpu": (lambda x: x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
                and _power_of_two(x.shape[-1]) and not x.requires_grad and _importable("fht_cpu"), _fht_cpu),
    "kronecker": (lambda x: hadamard_factors(x.shape[-1]) is not None, _kronecker),
    "dense": (lambda x: hadamard_factors(x.shape[-1]) is not None, _dense),
}
DEFAULT_ORDER: List[str] = ["cuda-fht", "fht-cpu", "kronecker", "dense"]


def _choose(x: torch.Tensor, backend: Optional[str]) -> str:
    names = [backend] if backend else DEFAULT_ORDER
    for name in names:
        if BACKENDS[name][0](x):
            return name
    raise ValueError(f"no Hadamard backend {names} supports size {x.shape[-1]}, dtype {x.dtype}, "
                     f"device {x.device}")


def hadamard_transform(x: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """``x @ H_n / sqrt(n)`` along the last dim (orthonormal; self-inverse up to transposition).

    ``backend`` forces one implementation; by default the first supporting one of ``DEFAULT_ORDER``.
    """
    return BACKENDS[_choose(x, backend)][1](x)


def random_hadamard_transform(x: torch.Tensor, signs: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """``(x * signs) @ H_n / sqrt(n)``. With ``fht-cpu`` the 1/sqrt(n) rides on the sign multiply and the
    transform runs in place on that product, which saves a full pass over x (for n = 4^k the scaling is
    by a power of two, so the result is bit-identical to ``hadamard_transform(x * signs)``)."""
    if _choose(x, backend) != "fht-cpu":
        return hadamard_transform(x * signs.to(x.dtype), backend)
    from fht_cpu import fht

    product = x * (signs * x.shape[-1] ** -0.5).to(x.dtype)  # a fresh contiguous tensor that we own
    fht(product.view(-1, x.shape[-1]).numpy(), axis=-1, inplace=True)
    return product


@functools.lru_cache(maxsize=16)
def _random_orthogonal_cpu(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    # unique, Haar-distributed; row-major (LAPACK's Q is column-major), as the same matrix loaded from a file is
    return (q * torch.sign(torch.diagonal(r))).contiguous()


def random_orthogonal(n: int, seed: int) -> torch.Tensor:
    """Seeded Haar-random orthogonal matrix [n, n] (float64): the rotation for non-Hadamard orders."""
    return _random_orthogonal_cpu(n, seed)
