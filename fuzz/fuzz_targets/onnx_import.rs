//! ONNX bytes -> the wire-format reader -> the importer -> (small inputs) the executor.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = sr_backend_onnx::proto::parse(data) else {
        return;
    };
    let Ok(imp) = sr_backend_onnx::import::import(&m, None, None) else {
        return;
    };
    // Run what imported when it is small: the executor must not panic either.
    if let sr_core::Op::Input { shape } = &imp.graph.nodes[0].op {
        if shape.iter().product::<usize>() <= 3 * 64 * 64 {
            if let Ok(exec) = sr_nn::Executor::new(imp.graph.clone()) {
                let mut dims = vec![1];
                dims.extend(shape);
                let x = sr_core::Tensor::zeros(dims);
                let _ = exec.forward(&x);
            }
        }
    }
});
