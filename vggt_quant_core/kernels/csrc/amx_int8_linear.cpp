// W8A8 Linear on Intel AMX with everything around the GEMM in the same pass over a block of rows: dynamic
// per-token quantization of the input, the int8 GEMM (TDPBSSD, int32 sums), and the epilogue (per-token x
// per-channel scale, bias, and optionally LayerScale and a residual add), written once.
//
// Why a kernel of our own: oneDNN's AMX int8 GEMM (onednn.qlinear_pointwise) takes only a scalar activation
// scale, so the per-token scale costs a pass over its float32 output, and the quantization a pass over the
// input; at VGGT's shapes those passes cost as much as the GEMM (benchmarks/RESULTS.md). Here a panel of
// rows is quantized into a buffer that stays in L2, multiplied with the whole weight, and each 32 x 32
// accumulator block is finished while it is in L1.
//
// Exactness (tested against kernels/elementwise.py): the codes and scales are those of quantize_per_token
// (IEEE division, round half to even, its operation order), the int32 sums are exact, and the epilogue
// rounds as dequantize_output / dequantize_output_residual: ((acc * a_scale) * w_scale) + bias, rounded to
// the layer's output dtype, then residual + y * layer_scale. Built with -ffp-contract=off (no FMA). A fused
// random Hadamard rotation (QuaRot's and DSFQ's online one) runs in float32 as an in-register fast
// Walsh-Hadamard transform: the same rotation as kernels/hadamard.py up to float rounding, not bit for bit.
//
// Layouts. Weight (pack_weight in amx_int8.py): [N/16][K/64][16][64] int8, the VNNI layout of an AMX B tile:
// row r of the tile of column block n and depth block k holds, for each of its 16 columns c,
// W[16n + c][64k + 4r .. 64k + 4r + 3]. K and N are zero-padded to multiples of 64 and 32. Activation codes
// of a panel: [M/16][K/64][16][64], so that every tile load reads 1 KB in a row.

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int kTileRows = 16;                       // rows of every tile used here
constexpr int kTileBytes = 64;                      // bytes per tile row
constexpr int kTileSize = kTileRows * kTileBytes;   // 1 KB
constexpr int kBlock = 32;                          // accumulator block: 2 x 2 tiles of 16 x 16 int32
constexpr int64_t kPanelBytes = 1 << 19;            // activation codes per panel: L2-resident
constexpr float kMinScale = 1e-8f;                  // elementwise.MIN_SCALE

struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

void load_tile_config() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {  // tmm0-3 accumulators, tmm4-5 activations, tmm6-7 weights
    config.colsb[t] = kTileBytes;
    config.rows[t] = kTileRows;
  }
  _tile_loadconfig(&config);
}

inline __mmask16 tail_mask(int64_t remaining) {
  return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1);
}

inline __m512 load_floats(const float* p, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, p); }

inline __m512 load_floats(const at::BFloat16* p, __mmask16 mask) {
  __m256i bits = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

inline __m512 round_to_bfloat16(__m512 v) {  // round to nearest even, as .to(torch.bfloat16)
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v)), 16));
}

// A full, aligned vector goes out with a streaming store: the outputs (tens of MB at VGGT's sizes) fit no
// cache, and a normal store first reads every line it writes (measured: qkv at 10 frames 52 -> 35 ms).
inline void store_output(float* p, __m512 v, __mmask16 mask) {
  if (mask == (__mmask16)0xFFFF && (reinterpret_cast<uintptr_t>(p) & 63) == 0) _mm512_stream_ps(p, v);
  else _mm512_mask_storeu_ps(p, mask, v);
}

inline void store_output(at::BFloat16* p, __m512 v, __mmask16 mask) {
  __m256i bits = (__m256i)_mm512_cvtneps_pbh(v);
  if (mask == (__mmask16)0xFFFF && (reinterpret_cast<uintptr_t>(p) & 31) == 0)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), bits);
  else _mm256_mask_storeu_epi16(p, mask, bits);
}

// x / scale rounded half to even. The product with the reciprocal is within |x / scale| * 2^-23 of the
// quotient, so under 2^-12 while |x / scale| < 2^11 (clip ratios >= 1/16; past the clamp every quotient
// gives the same code): only a vector with a product within 2^-12 of a tie needs the IEEE division (rare).
inline __m512 round_quotient(__m512 v, __m512 scale, __m512 reciprocal, bool divide) {
  const int mode = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  if (divide) return _mm512_roundscale_ps(_mm512_div_ps(v, scale), mode);
  __m512 t = _mm512_mul_ps(v, reciprocal);
  __m512 q = _mm512_roundscale_ps(t, mode);
  __m512 distance = _mm512_abs_ps(_mm512_sub_ps(t, q));
  if (_mm512_cmp_ps_mask(distance, _mm512_set1_ps(0.5f - 1.f / 4096), _CMP_GT_OQ))
    q = _mm512_roundscale_ps(_mm512_div_ps(v, scale), mode);
  return q;
}

// One butterfly level within a vector: lanes i and i + h (h < 16) become a + b and a - b.
inline __m512 butterfly(__m512 v, __m512 partner, __mmask16 upper) {
  return _mm512_mask_sub_ps(_mm512_add_ps(v, partner), upper, partner, v);
}

// v [n] <- v @ H_n (Sylvester order, unnormalised) in place, n a power of two >= 16: two levels per pass
// over the row while the stride is >= 16 lanes, then the four levels inside each vector.
void hadamard_in_place(float* v, int64_t n) {
  int64_t h = 16;
  for (; 4 * h <= n; h *= 4)
    for (int64_t i = 0; i < n; i += 4 * h)
      for (int64_t j = i; j < i + h; j += 16) {
        __m512 a = _mm512_loadu_ps(v + j), b = _mm512_loadu_ps(v + j + h);
        __m512 c = _mm512_loadu_ps(v + j + 2 * h), d = _mm512_loadu_ps(v + j + 3 * h);
        __m512 s0 = _mm512_add_ps(a, b), d0 = _mm512_sub_ps(a, b), s1 = _mm512_add_ps(c, d), d1 = _mm512_sub_ps(c, d);
        _mm512_storeu_ps(v + j, _mm512_add_ps(s0, s1));
        _mm512_storeu_ps(v + j + h, _mm512_add_ps(d0, d1));
        _mm512_storeu_ps(v + j + 2 * h, _mm512_sub_ps(s0, s1));
        _mm512_storeu_ps(v + j + 3 * h, _mm512_sub_ps(d0, d1));
      }
  if (2 * h <= n)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; j += 16) {
        __m512 a = _mm512_loadu_ps(v + j), b = _mm512_loadu_ps(v + j + h);
        _mm512_storeu_ps(v + j, _mm512_add_ps(a, b));
        _mm512_storeu_ps(v + j + h, _mm512_sub_ps(a, b));
      }
  for (int64_t i = 0; i < n; i += 16) {
    __m512 x = _mm512_loadu_ps(v + i);
    x = butterfly(x, _mm512_shuffle_f32x4(x, x, 0x4E), 0xFF00);  // h = 8: swap 256-bit halves
    x = butterfly(x, _mm512_shuffle_f32x4(x, x, 0xB1), 0xF0F0);  // h = 4: swap 128-bit lanes
    x = butterfly(x, _mm512_permute_ps(x, 0x4E), 0xCCCC);        // h = 2
    x = butterfly(x, _mm512_permute_ps(x, 0xB1), 0xAAAA);        // h = 1
    _mm512_storeu_ps(v + i, x);
  }
}

// One row x [K] -> its scale, and its int8 codes in the A-tile layout (`codes` points at the row's first 64
// bytes; depth blocks are kTileSize apart; zeros past K). With `rotation` [K] (signs / sqrt(K), K a power of
// two) x is first rotated, (x * rotation) @ H_K, as the random Hadamard transform does; with `divisor` [K]
// then divided by it, or multiplied by `inverse` = 1 / divisor after a rotation (which is not bit-exact
// anyway; a division per element is the slowest step left).
template <typename In>
float quantize_row(const In* x, const float* rotation, const float* divisor, const float* inverse, int64_t k,
                   int64_t k_padded, float qmax, float clip, float* scratch, int8_t* codes) {
  if (rotation) {
    for (int64_t i = 0; i < k; i += 16)
      _mm512_storeu_ps(scratch + i, _mm512_mul_ps(load_floats(x + i, 0xFFFF), _mm512_loadu_ps(rotation + i)));
    hadamard_in_place(scratch, k);
  }
  __m512 absmax = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 16) {
    const __mmask16 mask = tail_mask(k - i);
    __m512 v = rotation ? _mm512_loadu_ps(scratch + i) : load_floats(x + i, mask);
    if (inverse) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(mask, inverse + i));
    else if (divisor) v = _mm512_div_ps(v, _mm512_mask_loadu_ps(_mm512_set1_ps(1.f), mask, divisor + i));
    _mm512_mask_storeu_ps(scratch + i, mask, v);
    absmax = _mm512_max_ps(absmax, _mm512_abs_ps(v));
  }
  float scale = _mm512_reduce_max_ps(absmax) * clip / qmax;
  if (!(scale >= kMinScale)) scale = kMinScale;
  const __m512 vscale = _mm512_set1_ps(scale), reciprocal = _mm512_set1_ps(1.f / scale);
  const __m512 lo = _mm512_set1_ps(-qmax - 1.f), hi = _mm512_set1_ps(qmax);
  for (int64_t i = 0; i < k_padded; i += 16) {
    const __mmask16 mask = i < k ? tail_mask(k - i) : (__mmask16)0;
    __m512 q = round_quotient(_mm512_maskz_loadu_ps(mask, scratch + i), vscale, reciprocal, clip < 1.f / 16);
    q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + (i / kTileBytes) * kTileSize + i % kTileBytes),
                     _mm512_maskz_cvtepi32_epi8(mask, _mm512_cvtps_epi32(q)));
  }
  return scale;
}

struct Problem {
  int64_t m, k, n, k_padded, n_padded;
  float qmax, clip;
  const float* rotation;     // [K] or null: signs / sqrt(K) of a leading random Hadamard transform
  const float* divisor;      // [K] or null
  const int8_t* weight;      // packed, see the header
  const float* w_scale;      // [N]
  const float* bias;         // [N] or null
  const float* layer_scale;  // [N] or null (only with a residual)
  bool round_to_bf16;        // a bfloat16 layer: y is rounded to bfloat16 before the residual add
};

// out[m, n] = epilogue(sum_k codes[m, k] * W[n, k]) for the rows [m_begin, m_end).
template <typename In, typename Out>
void linear_rows(const Problem& p, const In* x, const Out* residual, Out* out, int64_t m_begin, int64_t m_end,
                 int64_t panel_rows) {
  const int64_t k_blocks = p.k_padded / kTileBytes;
  std::vector<int8_t> codes(panel_rows * p.k_padded);
  std::vector<float> scales(panel_rows), scratch(p.k_padded), inverse;
  if (p.rotation && p.divisor) {
    inverse.resize(p.k);
    for (int64_t i = 0; i < p.k; ++i) inverse[i] = 1.f / p.divisor[i];
  }
  alignas(64) int32_t acc[kBlock * kBlock];
  load_tile_config();
  for (int64_t m0 = m_begin; m0 < m_end; m0 += panel_rows) {
    const int64_t rows = std::min(panel_rows, m_end - m0);
    const int64_t rows_padded = (rows + kBlock - 1) / kBlock * kBlock;
    for (int64_t r = 0; r < rows_padded; ++r) {
      int8_t* row_codes = codes.data() + (r / kTileRows) * k_blocks * kTileSize + (r % kTileRows) * kTileBytes;
      if (r < rows) {
        scales[r] = quantize_row(x + (m0 + r) * p.k, p.rotation, p.divisor,
                                 inverse.empty() ? nullptr : inverse.data(), p.k, p.k_padded, p.qmax, p.clip,
                                 scratch.data(), row_codes);
      } else {
        for (int64_t kb = 0; kb < k_blocks; ++kb) std::memset(row_codes + kb * kTileSize, 0, kTileBytes);
      }
    }
    for (int64_t n0 = 0; n0 < p.n_padded; n0 += kBlock) {
      const int8_t* b0 = p.weight + (n0 / kTileRows) * k_blocks * kTileSize;
      const int8_t* b1 = b0 + k_blocks * kTileSize;
      __m512 w_scale[2], bias[2], layer_scale[2];
      __mmask16 col_mask[2];
      for (int h = 0; h < 2; ++h) {
        const int64_t col = n0 + 16 * h;
        col_mask[h] = col < p.n ? tail_mask(p.n - col) : (__mmask16)0;
        w_scale[h] = _mm512_maskz_loadu_ps(col_mask[h], p.w_scale + col);
        bias[h] = p.bias ? _mm512_maskz_loadu_ps(col_mask[h], p.bias + col) : _mm512_setzero_ps();
        layer_scale[h] = p.layer_scale ? _mm512_maskz_loadu_ps(col_mask[h], p.layer_scale + col) : _mm512_setzero_ps();
      }
      for (int64_t mb = 0; mb < rows_padded; mb += kBlock) {
        const int8_t* a0 = codes.data() + (mb / kTileRows) * k_blocks * kTileSize;
        const int8_t* a1 = a0 + k_blocks * kTileSize;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t kb = 0; kb < k_blocks; ++kb) {
          _tile_loadd(4, a0 + kb * kTileSize, kTileBytes);
          _tile_loadd(5, a1 + kb * kTileSize, kTileBytes);
          _tile_loadd(6, b0 + kb * kTileSize, kTileBytes);
          _tile_loadd(7, b1 + kb * kTileSize, kTileBytes);
          _tile_dpbssd(0, 4, 6);
          _tile_dpbssd(1, 4, 7);
          _tile_dpbssd(2, 5, 6);
          _tile_dpbssd(3, 5, 7);
        }
        constexpr int stride = kBlock * sizeof(int32_t);
        _tile_stored(0, acc, stride);
        _tile_stored(1, acc + 16, stride);
        _tile_stored(2, acc + 16 * kBlock, stride);
        _tile_stored(3, acc + 16 * kBlock + 16, stride);
        const int64_t block_rows = std::min<int64_t>(kBlock, rows - mb);
        for (int64_t r = 0; r < block_rows; ++r) {
          const int64_t offset = (m0 + mb + r) * p.n + n0;
          const __m512 a_scale = _mm512_set1_ps(scales[mb + r]);
          for (int h = 0; h < 2 && col_mask[h]; ++h) {
            __m512 y = _mm512_cvtepi32_ps(_mm512_load_si512(acc + r * kBlock + 16 * h));
            y = _mm512_mul_ps(_mm512_mul_ps(y, a_scale), w_scale[h]);
            if (p.bias) y = _mm512_add_ps(y, bias[h]);
            if (residual) {
              if (p.round_to_bf16) y = round_to_bfloat16(y);
              if (p.layer_scale) y = _mm512_mul_ps(y, layer_scale[h]);
              y = _mm512_add_ps(load_floats(residual + offset + 16 * h, col_mask[h]), y);
            }
            store_output(out + offset + 16 * h, y, col_mask[h]);
          }
        }
      }
    }
  }
  _tile_release();
  _mm_sfence();  // streaming stores are weakly ordered: make them visible before the caller reads the output
}

template <typename In, typename Out>
void run(const Problem& p, const torch::Tensor& x, const c10::optional<torch::Tensor>& residual, torch::Tensor& out) {
  // rows per panel: their codes (kPanelBytes) stay in L2 next to the weight blocks streaming through
  const int64_t panel_rows = std::clamp<int64_t>(kPanelBytes / p.k_padded / kBlock * kBlock, kBlock, 256);
  const int64_t panels = (p.m + panel_rows - 1) / panel_rows;
  const In* xp = x.data_ptr<In>();
  const Out* rp = residual ? residual->data_ptr<Out>() : nullptr;
  Out* op = out.data_ptr<Out>();
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    linear_rows<In, Out>(p, xp, rp, op, begin * panel_rows, std::min(p.m, end * panel_rows), panel_rows);
  });
}

void check_vector(const c10::optional<torch::Tensor>& v, int64_t n, const char* name) {
  if (v) TORCH_CHECK(v->dim() == 1 && v->size(0) == n && v->is_contiguous() && v->scalar_type() == torch::kFloat,
                     name, " must be a contiguous float32 [N] tensor");
}

}  // namespace

// x [M, K] float32/bfloat16 -> [M, N]: dequant(Q(R(x) / divisor) @ W^T) + bias in `out_dtype`, R the random
// Hadamard rotation that `rotation` gives (or none); with a residual [M, N] (of the result's dtype),
// residual + that * layer_scale, in the residual's dtype.
torch::Tensor amx_int8_linear(const torch::Tensor& x, const c10::optional<torch::Tensor>& rotation,
                              const c10::optional<torch::Tensor>& divisor,
                              const torch::Tensor& weight, const torch::Tensor& w_scale,
                              const c10::optional<torch::Tensor>& bias, int64_t n, double qmax, double clip,
                              c10::ScalarType out_dtype, const c10::optional<torch::Tensor>& layer_scale,
                              const c10::optional<torch::Tensor>& residual) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.device().is_cpu(), "x must be a contiguous CPU [M, K] tensor");
  TORCH_CHECK(x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kBFloat16, "x must be float32 or bfloat16");
  TORCH_CHECK(weight.dim() == 4 && weight.scalar_type() == torch::kInt8 && weight.is_contiguous() &&
                  weight.size(2) == kTileRows && weight.size(3) == kTileBytes,
              "weight must be pack_weight's [N/16, K/64, 16, 64] int8 tensor");
  const int64_t k_padded = weight.size(1) * kTileBytes, n_padded = weight.size(0) * kTileRows;
  TORCH_CHECK(k_padded >= x.size(1) && k_padded - x.size(1) < kTileBytes && n_padded >= n && n_padded % kBlock == 0 &&
                  n_padded - n < kBlock, "the packed weight does not match x's K or N");
  check_vector(rotation, x.size(1), "rotation");
  const int64_t k = x.size(1);
  TORCH_CHECK(!rotation || (k >= 16 && (k & (k - 1)) == 0), "a rotation needs K a power of two >= 16, not ", k);
  check_vector(divisor, x.size(1), "divisor");
  check_vector(w_scale, n, "w_scale");
  check_vector(bias, n, "bias");
  check_vector(layer_scale, n, "layer_scale");
  TORCH_CHECK(!layer_scale || residual, "layer_scale needs a residual");
  TORCH_CHECK(out_dtype == torch::kFloat || out_dtype == torch::kBFloat16, "out_dtype must be float32 or bfloat16");
  const auto result_dtype = residual ? residual->scalar_type() : out_dtype;
  if (residual) {
    TORCH_CHECK(residual->dim() == 2 && residual->size(0) == x.size(0) && residual->size(1) == n &&
                    residual->is_contiguous(), "residual must be a contiguous [M, N] tensor");
    TORCH_CHECK(result_dtype == torch::kFloat || (out_dtype == torch::kBFloat16 && !layer_scale),
                "a bfloat16 residual takes a bfloat16 layer without layer_scale (else the sum is float32)");
  }
  Problem p{x.size(0), x.size(1), n, k_padded, n_padded, (float)qmax, (float)clip,
            rotation ? rotation->data_ptr<float>() : nullptr, divisor ? divisor->data_ptr<float>() : nullptr,
            weight.data_ptr<int8_t>(), w_scale.data_ptr<float>(), bias ? bias->data_ptr<float>() : nullptr, layer_scale ? layer_scale->data_ptr<float>() : nullptr,
            out_dtype == torch::kBFloat16};
  auto out = torch::empty({x.size(0), n}, x.options().dtype(result_dtype));
  if (x.size(0) == 0) return out;
  const bool bf16_in = x.scalar_type() == torch::kBFloat16, bf16_out = result_dtype == torch::kBFloat16;
  if (bf16_in && bf16_out) run<at::BFloat16, at::BFloat16>(p, x, residual, out);
  else if (bf16_in) run<at::BFloat16, float>(p, x, residual, out);
  else if (bf16_out) run<float, at::BFloat16>(p, x, residual, out);
  else run<float, float>(p, x, residual, out);
  return out;
}

// A torch op (torch.ops.vggtq.amx_int8_linear) rather than a Python binding, so that the profiler sees it.
TORCH_LIBRARY(vggtq, m) {
  m.def("amx_int8_linear(Tensor x, Tensor? rotation, Tensor? divisor, Tensor weight, Tensor w_scale, Tensor? bias, int n, float qmax, "
        "float clip, ScalarType out_dtype, Tensor? layer_scale, Tensor? residual) -> Tensor");
}

TORCH_LIBRARY_IMPL(vggtq, CPU, m) { m.impl("amx_int8_linear", &amx_int8_linear); }
