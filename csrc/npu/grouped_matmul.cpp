// _npu_grouped_matmul: aclnnGroupedMatmulV4 in the documented "single x, single weight, single y" mode.
//
// A private helper op of the Ascend backend: the Python kernels of grouped_gemm / grouped_gemm_masked
// decide the route (capability table, host-side offset checks) and call it instead of
// torch_npu.npu_grouped_matmul when _C_npu is built. Same mapping as that Python call:
// group_type 0 (M-axis groups), group_list int64 cumulative ends (group_list_type 0) whose last value
// equals x's rows, weight [G, K, N] as the transposed view of our [G, N, K], split_item 3 (one output).
#include <torch/library.h>

#include "aclnn_call.h"

namespace v4_ascend::npu {
namespace {

at::Tensor grouped_matmul(const at::Tensor& x, const at::Tensor& w, const at::Tensor& group_ends) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 3 && w.size(2) == x.size(1), "_npu_grouped_matmul: x [M, K], w [G, N, K]");
  TORCH_CHECK(group_ends.scalar_type() == at::kLong && group_ends.dim() == 1 && group_ends.size(0) == w.size(0),
              "_npu_grouped_matmul: group_ends must be int64 [G]");
  at::Tensor y = at::empty({x.size(0), w.size(1)}, x.options());
  // x may not be transposed; the weight is the transposed view of a contiguous [G, N, K].
  const std::vector<at::Tensor> xs{x.contiguous()}, weights{w.contiguous().transpose(1, 2)}, ys{y};
  const at::TensorList none;
  const int64_t split_item = 3, group_type = 0, group_list_type = 0, act_type = 0;
  // x, weight, bias, scale, offset, antiquant_scale, antiquant_offset, per_token_scale, group_list,
  // activation_input, activation_quant_scale, activation_quant_offset, split_item, group_type,
  // group_list_type, act_type, y, activation_feature_out, dyn_quant_scale_out
  aclnn_call("aclnnGroupedMatmulV4", at::TensorList(xs), at::TensorList(weights), none, none, none, none, none, none,
             group_ends, none, none, none, split_item, group_type, group_list_type, act_type, at::TensorList(ys),
             none, none);
  return y;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(v4_ascend, m) {
  m.def("_npu_grouped_matmul(Tensor x, Tensor w, Tensor group_ends) -> Tensor");
}

TORCH_LIBRARY_IMPL(v4_ascend, PrivateUse1, m) {
  m.impl("_npu_grouped_matmul", &grouped_matmul);
}

}  // namespace v4_ascend::npu
