use candle_core::{Device, Tensor};
use classmod_host::train::TrainableResNet;
use classmod_runtime::{InputSpec, ModelMeta, ResNetConfig};
use std::time::Instant;
fn main() {
    let arch = ResNetConfig::cifar(8, 1, 10).unwrap();
    let meta = ModelMeta { arch, input: InputSpec { channels: 1, height: 28, width: 28, mean: vec![0.0], std: vec![1.0] }, class_names: (0..10).map(|i| i.to_string()).collect() };
    let mut net = TrainableResNet::init(meta, 0, &Device::Cpu).unwrap();
    let x = Tensor::randn(0f32, 1., (64, 1, 28, 28), &Device::Cpu).unwrap();
    let y = Tensor::from_vec((0..64u32).map(|i| i % 10).collect::<Vec<_>>(), 64, &Device::Cpu).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let l = net.forward(&x, true).unwrap();
        let loss = candle_nn::loss::cross_entropy(&l, &y).unwrap();
        let t1 = t.elapsed();
        let g = loss.backward().unwrap();
        let t2 = t.elapsed();
        drop(g);
        let t = Instant::now();
        let _ = net.forward(&x, false).unwrap();
        println!("fwd train {:?} bwd {:?} fwd eval {:?}", t1, t2 - t1, t.elapsed());
    }
}
