// C++ interface of cutlass_int_gemm.cu (no torch, no CUTLASS types: both sides compile separately).
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

namespace vggtq {

enum class CodeType { kInt8, kInt4 };  // kInt4: both operands packed, two codes per byte, low nibble = even k
enum class OutType { kFloat32, kBFloat16, kFloat16 };

// D[m, n] = float(A[m, :] . B[n, :]) * a_scale[m] * w_scale[n] + bias[n]; all row-major and contiguous.
struct IntGemmProblem {
  int m, n, k;            // k counts codes (not bytes)
  const void* a;          // [m, k] codes
  const void* b;          // [n, k] codes
  const float* a_scale;   // [m]
  const float* w_scale;   // [n]
  const float* bias;      // [n] or nullptr
  void* out;              // [m, n] of out_type
  OutType out_type;
};

size_t int_gemm_dequant_workspace(CodeType codes, const IntGemmProblem& problem);

// nullptr on success, else a static error message.
const char* int_gemm_dequant(CodeType codes, const IntGemmProblem& problem, void* workspace, cudaStream_t stream);

}  // namespace vggtq
