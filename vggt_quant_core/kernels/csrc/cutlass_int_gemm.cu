// Integer GEMMs with the dequant epilogue fused, on CUTLASS 2.x tensor-op kernels (sm_80 and newer):
//
//   D[m, n] = float(sum_k A[m, k] * B[n, k]) * a_scale[m] * w_scale[n] + bias[n]    (bias optional)
//
// A: activation codes, row-major [M, K]; B: weight codes, row-major [N, K] (= column-major [K, N]);
// accumulation in int32 (exact); epilogue in float32 through an epilogue visitor tree (EVT), stored as
// float32, bfloat16 or float16. Two element types:
//   * int8 x int8 (IMMA.16832.S8.S8): W8A8, and W4A8/W4A4 with int4 codes widened to int8;
//   * int4 x int4 (IMMA.16864.S4.S4, native on sm_80/86/87/89 only; Hopper and newer emulate it):
//     W4A4 with both operands packed two codes per byte, low nibble = even k, which is CUTLASS's
//     int4b_t memory order and the project's checkpoint layout.
// No torch headers here: this file compiles with nvcc alone (checked for sm_80, sm_89 and sm_90 that way);
// cutlass_binding.cpp wraps it for PyTorch.

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// Order matters: the EVT headers rely on the GEMM headers (as in CUTLASS's example 47).
#include "cutlass/cutlass.h"
#include "cutlass/gemm/device/gemm_universal.h"
#include "cutlass/numeric_types.h"
#include "cutlass/epilogue/threadblock/fusion/visitors.hpp"
#include "cutlass/gemm/kernel/default_gemm_universal_with_visitor.h"
#include "cutlass/gemm/device/gemm_universal_adapter.h"

#include "cutlass_int_gemm.h"

namespace vggtq {
namespace {

using namespace cute;
namespace tb = cutlass::epilogue::threadblock;

template <typename ElementIn, typename ElementOut, typename TileShape, typename WarpShape, typename MmaShape,
          int Stages>
struct IntGemmDequant {
  static constexpr int kAlignmentIn = 128 / cutlass::sizeof_bits<ElementIn>::value;
  static constexpr int kAlignmentOut = 128 / cutlass::sizeof_bits<ElementOut>::value;
  static constexpr int kEpilogueStages = 1;

  using ThreadMap = tb::OutputTileThreadLayout<TileShape, WarpShape, ElementOut, kAlignmentOut, kEpilogueStages>;

  using Accum = tb::VisitorAccFetch;
  using TokenScale = tb::VisitorColBroadcast<ThreadMap, float, Stride<_1, _0, int32_t>>;    // a_scale[m]
  using ChannelScale = tb::VisitorRowBroadcast<ThreadMap, float, Stride<_0, _1, int32_t>>;  // w_scale[n]
  using Bias = tb::VisitorRowBroadcast<ThreadMap, float, Stride<_0, _1, int32_t>>;          // bias[n] or 0

  using TimesToken = tb::VisitorCompute<cutlass::multiplies, float, float, cutlass::FloatRoundStyle::round_to_nearest>;
  using EvtToken = tb::Sm80EVT<TimesToken, Accum, TokenScale>;
  using TimesChannelPlusBias =
      tb::VisitorCompute<cutlass::homogeneous_multiply_add, ElementOut, float,
                         cutlass::FloatRoundStyle::round_to_nearest>;
  using EvtOut = tb::Sm80EVT<TimesChannelPlusBias, EvtToken, ChannelScale, Bias>;
  using Store = tb::VisitorAuxStore<ThreadMap, ElementOut, cutlass::FloatRoundStyle::round_to_nearest,
                                    Stride<int64_t, _1, int64_t>>;
  using Evt = tb::Sm80EVT<Store, EvtOut>;

  using Kernel = typename cutlass::gemm::kernel::DefaultGemmWithVisitor<
      ElementIn, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, kAlignmentIn,
      ElementIn, cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, kAlignmentIn,
      ElementOut, cutlass::layout::RowMajor, kAlignmentOut,
      int32_t, float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80, TileShape, WarpShape, MmaShape,
      Evt, cutlass::gemm::threadblock::ThreadblockSwizzleStreamK, Stages,
      cutlass::arch::OpMultiplyAddSaturate, kEpilogueStages>::GemmKernel;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const IntGemmProblem& p) {
    int m = p.m, n = p.n, k = p.k;
    typename Evt::Arguments callbacks{
        {
            {
                {},                                                                  // Accum
                {p.a_scale, 0.f, {_1{}, _0{}, int32_t(m)}},                          // TokenScale
                {}                                                                   // TimesToken
            },
            {p.w_scale, 0.f, {_0{}, _1{}, int32_t(n)}},                              // ChannelScale
            {p.bias, 0.f, {_0{}, _1{}, int32_t(n)}},                                 // Bias (nullptr: 0)
            {}                                                                       // TimesChannelPlusBias
        },
        {static_cast<ElementOut*>(p.out), {int64_t(n), _1{}, int64_t(m) * n}}        // Store
    };
    return typename Gemm::Arguments(
        cutlass::gemm::GemmUniversalMode::kGemm, {m, n, k}, 1, callbacks,
        static_cast<const ElementIn*>(p.a), static_cast<const ElementIn*>(p.b), nullptr, nullptr,
        int64_t(m) * k, int64_t(n) * k, 0, 0, k, k, 0, 0);
  }

  static size_t workspace(const IntGemmProblem& p) { return Gemm::get_workspace_size(arguments(p)); }

  static const char* run(const IntGemmProblem& p, void* workspace, cudaStream_t stream) {
    auto args = arguments(p);
    Gemm gemm;
    if (gemm.can_implement(args) != cutlass::Status::kSuccess) {
      return "CUTLASS cannot implement this problem (alignment: K must be a multiple of 16 int8 / 32 int4 "
             "codes, N of 8)";
    }
    if (gemm.initialize(args, workspace, stream) != cutlass::Status::kSuccess) {
      return "CUTLASS GEMM initialisation failed";
    }
    return gemm.run(stream) == cutlass::Status::kSuccess ? nullptr : "CUTLASS GEMM launch failed";
  }
};

// Untuned default tiles (the largest common CUTLASS 2.x choices for these element types).
template <typename ElementOut>
using Int8Gemm = IntGemmDequant<int8_t, ElementOut, cutlass::gemm::GemmShape<128, 128, 64>,
                                cutlass::gemm::GemmShape<64, 64, 64>, cutlass::gemm::GemmShape<16, 8, 32>, 4>;
template <typename ElementOut>
using Int4Gemm = IntGemmDequant<cutlass::int4b_t, ElementOut, cutlass::gemm::GemmShape<128, 128, 128>,
                                cutlass::gemm::GemmShape<64, 64, 128>, cutlass::gemm::GemmShape<16, 8, 64>, 3>;

// Calls Op::apply<Gemm<ElementOut>>() for the problem's code and output types.
template <typename Op>
auto dispatch(CodeType codes, OutType out, Op op) {
  if (codes == CodeType::kInt8) {
    if (out == OutType::kFloat32) return op.template apply<Int8Gemm<float>>();
    if (out == OutType::kBFloat16) return op.template apply<Int8Gemm<cutlass::bfloat16_t>>();
    return op.template apply<Int8Gemm<cutlass::half_t>>();
  }
  if (out == OutType::kFloat32) return op.template apply<Int4Gemm<float>>();
  if (out == OutType::kBFloat16) return op.template apply<Int4Gemm<cutlass::bfloat16_t>>();
  return op.template apply<Int4Gemm<cutlass::half_t>>();
}

struct Workspace {
  const IntGemmProblem& p;
  template <typename G> size_t apply() const { return G::workspace(p); }
};

struct Run {
  const IntGemmProblem& p;
  void* workspace;
  cudaStream_t stream;
  template <typename G> const char* apply() const { return G::run(p, workspace, stream); }
};

}  // namespace

size_t int_gemm_dequant_workspace(CodeType codes, const IntGemmProblem& problem) {
  return dispatch(codes, problem.out_type, Workspace{problem});
}

const char* int_gemm_dequant(CodeType codes, const IntGemmProblem& problem, void* workspace, cudaStream_t stream) {
  return dispatch(codes, problem.out_type, Run{problem, workspace, stream});
}

}  // namespace vggtq
