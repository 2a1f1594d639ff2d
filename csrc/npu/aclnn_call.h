// Two-stage aclnn calls resolved at run time, through the helpers torch_npu exports.
//
// Stage 1 (aclnnXxxGetWorkspaceSize) runs on the calling thread; stage 2 (aclnnXxx) is enqueued on the
// current NPU stream through torch_npu's task queue (OpCommand::RunOpApiV2), like EXEC_NPU_CMD. Both
// symbols are looked up with dlsym (GetOpApiFuncAddr searches libopapi.so and the custom-op libraries),
// so this file links without CANN and a missing op fails with its name at the first call.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <utility>

#include "op_plugin/utils/op_api_common_base.h"
#include "torch_npu/csrc/core/npu/NPUStream.h"
#include "torch_npu/csrc/framework/OpCommand.h"

namespace v4_ascend::npu {

template <typename... Args>
void aclnn_call(const char* api, const Args&... args) {
  const std::string workspace_api = std::string(api) + "GetWorkspaceSize";
  void* const workspace_fn = GetOpApiFuncAddr(workspace_api.c_str());
  void* const run_fn = GetOpApiFuncAddr(api);
  TORCH_CHECK(workspace_fn != nullptr && run_fn != nullptr, "v4_ascend: ", api, " or ", workspace_api,
              " is not in libopapi.so or a custom-op library: the installed CANN lacks this op");

  // aclTensor*, aclTensorList*, ... for tensors; integers pass through unchanged.
  auto converted = std::make_tuple(ConvertType(args)...);
  using WorkspaceFn = int (*)(decltype(ConvertType(args))..., uint64_t*, aclOpExecutor**);
  uint64_t workspace_size = 0;
  aclOpExecutor* executor = nullptr;
  const int status = std::apply(
      [&](auto... acl_args) {
        return reinterpret_cast<WorkspaceFn>(workspace_fn)(acl_args..., &workspace_size, &executor);
      },
      converted);
  if (status != 0) {
    ReleaseConvertTypes(converted);
    TORCH_CHECK(false, "v4_ascend: ", workspace_api, " failed with status ", status);
  }

  const c10_npu::NPUStream npu_stream = c10_npu::getCurrentNPUStream();
  // The caching allocator orders blocks by stream, so the workspace may be released once enqueued.
  // (OpPreparation::unsafe_empty_workspace is not exported by libtorch_npu.so; the link check found it.)
  at::Tensor workspace;
  void* workspace_ptr = nullptr;
  if (workspace_size != 0) {
    workspace = at::empty({static_cast<int64_t>(workspace_size)},
                          at::TensorOptions().dtype(at::kByte).device(npu_stream.device()));
    workspace_ptr = workspace.data_ptr();
  }
  const aclrtStream stream = npu_stream.stream(false);
  const std::string name(api);
  at_npu::native::OpCommand::RunOpApiV2(name, [=]() mutable -> int {
    const int run_status = reinterpret_cast<OpApiFunc>(run_fn)(workspace_ptr, workspace_size, executor, stream);
    ReleaseConvertTypes(converted);
    TORCH_CHECK(run_status == 0, "v4_ascend: ", name, " failed with status ", run_status);
    return run_status;
  });
}

}  // namespace v4_ascend::npu
