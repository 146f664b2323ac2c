"""The PT2E example from PyTorch's quantization docs (../shared/seeds/004), ported by changing imports only.

Original imports:
    from torch.ao.quantization.quantize_pt2e import prepare_pt2e
    from torch._export import capture_pre_autograd_graph
    from torch.ao.quantization.quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
"""

import torch
from quantplug import prepare_pt2e, convert_pt2e
from quantplug.compat import capture_pre_autograd_graph
from quantplug_arm_xnnpack import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)

import quantplug


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(5, 10)

    def forward(self, x):
        return self.linear(x)


def test_docs_pt2e_example_runs_int8_kernels():
    # --- the documentation example, unchanged but for imports (and the data it leaves implicit) ---
    float_model = M().eval()

    def calibrate(model, data_loader):
        with torch.no_grad():
            for image, target in data_loader:
                model(image)

    example_inputs = (torch.randn(4, 5),)
    sample_inference_data = [(torch.randn(4, 5), None) for _ in range(8)]
    m = capture_pre_autograd_graph(float_model, example_inputs)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config())
    m = prepare_pt2e(m, quantizer)
    calibrate(m, sample_inference_data)
    m = convert_pt2e(m)
    # --- end of the example; now check it really runs the plugin's int8 kernel ---
    report = quantplug.explain(m)
    assert [r.op for r in report.kernels] == ["linear"] and "xnnpack" in report.kernels[0].detail
    x = torch.randn(4, 5)
    assert quantplug.affine.sqnr(float_model(x), m(x)) > 25
