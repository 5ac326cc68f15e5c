// PyTorch binding of cutlass_int_gemm.cu: argument checks, output allocation, CUDA stream.
#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cutlass_int_gemm.h"

namespace {

vggtq::OutType out_type(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat: return vggtq::OutType::kFloat32;
    case at::kBFloat16: return vggtq::OutType::kBFloat16;
    case at::kHalf: return vggtq::OutType::kFloat16;
    default: TORCH_CHECK(false, "output dtype must be float32, bfloat16 or float16, got ", dtype);
  }
}

// a: [M, K] int8 codes, or uint8 [M, K/2] packed int4 (packed=true); b likewise [N, K] / [N, K/2].
torch::Tensor int_gemm_dequant(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& a_scale,
                               const torch::Tensor& w_scale, const c10::optional<torch::Tensor>& bias,
                               bool packed, at::ScalarType dtype) {
  TORCH_CHECK(a.is_cuda() && b.is_cuda(), "operands must be CUDA tensors");
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(1), "a [M, K] and b [N, K] expected");
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous(), "operands must be contiguous (row-major)");
  TORCH_CHECK(a.scalar_type() == (packed ? at::kByte : at::kChar) && b.scalar_type() == a.scalar_type(),
              packed ? "packed int4 operands must be uint8" : "int8 operands expected");
  const int64_t m = a.size(0), n = b.size(0), k = a.size(1) * (packed ? 2 : 1);
  TORCH_CHECK(a_scale.scalar_type() == at::kFloat && a_scale.numel() == m && a_scale.is_contiguous(),
              "a_scale: float32 [M]");
  TORCH_CHECK(w_scale.scalar_type() == at::kFloat && w_scale.numel() == n && w_scale.is_contiguous(),
              "w_scale: float32 [N]");
  if (bias) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == n && bias->is_contiguous(), "bias: float32 [N]");
  }
  const c10::cuda::CUDAGuard guard(a.device());
  auto out = torch::empty({m, n}, a.options().dtype(dtype));
  vggtq::IntGemmProblem problem{int(m), int(n), int(k), a.data_ptr(), b.data_ptr(), a_scale.data_ptr<float>(),
                                w_scale.data_ptr<float>(), bias ? bias->data_ptr<float>() : nullptr,
                                out.data_ptr(), out_type(dtype)};
  const auto codes = packed ? vggtq::CodeType::kInt4 : vggtq::CodeType::kInt8;
  const size_t bytes = vggtq::int_gemm_dequant_workspace(codes, problem);
  auto workspace = torch::empty({int64_t(bytes)}, a.options().dtype(at::kByte));
  const char* error = vggtq::int_gemm_dequant(codes, problem, bytes ? workspace.data_ptr() : nullptr,
                                              c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(error == nullptr, error);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("int_gemm_dequant", &int_gemm_dequant, "D = float(A @ B^T) * a_scale[:, None] * w_scale + bias");
}
