package pathpolicy

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"

	"github.com/gigapath/gigapath/ebpf/cgroup"
)

// Supported says whether this kernel can run the per-path policy and
// telemetry (sockops programs on a cgroup v2) and the send share (a raw
// tracepoint on mptcp:mptcp_subflow_get_send). Each error names what is
// missing; nil means it loads. For `gigapath check` and kernel matrices.
func Supported() (policy, sendShare error) {
	if err := features.HaveProgramType(ebpf.SockOps); err != nil {
		policy = fmt.Errorf("per-path policy needs BPF sockops programs: %w", err)
	} else if err := features.HaveProgramHelper(ebpf.SockOps, asm.FnGetNetnsCookie); err != nil {
		policy = fmt.Errorf("per-path policy needs bpf_get_netns_cookie in sockops programs (Linux 5.15 or newer) to keep to one network namespace: %w", err)
	} else if _, err := cgroup.Mount(); err != nil {
		policy = fmt.Errorf("per-path policy needs a cgroup v2 hierarchy: %w", err)
	}
	if err := features.HaveProgramType(ebpf.RawTracepoint); err != nil {
		return policy, fmt.Errorf("send share needs BPF raw tracepoint programs: %w", err)
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return policy, fmt.Errorf("send share needs kernel BTF (/sys/kernel/btf/vmlinux): %w", err)
	}
	var td *btf.Typedef
	if err := spec.TypeByName("btf_trace_mptcp_subflow_get_send", &td); err != nil {
		if errors.Is(err, btf.ErrNotFound) {
			return policy, errors.New("send share needs the tracepoint mptcp:mptcp_subflow_get_send; this kernel's BTF has none")
		}
		return policy, fmt.Errorf("send share: look up the tracepoint in kernel BTF: %w", err)
	}
	return policy, nil
}
