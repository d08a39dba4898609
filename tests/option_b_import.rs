//! Import of a torchvision-lineage export (option-B `downsample.0/1` projections, `module.`
//! prefix, `num_batches_tracked` buffers) of a 1-channel 28x28 ResNet with random weights.
//! Reference: an independent direct convolution in f64 written here, op by op, with batch norm
//! applied unfolded in eval mode, sharing no code with the runtime's graph.

mod common;

use std::collections::HashMap;

use classmod::host::import::{import_bytes, ImportOptions};
use classmod::runtime::host::{ResNet, ResNetConfig, Shortcut, Tensor};
use classmod::runtime::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

type Params = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// Direct convolution of one CHW image; weight (o, i, k, k), zero padding k/2.
fn conv(
    x: &[f64],
    c: usize,
    h: usize,
    w: usize,
    wt: &(Vec<usize>, Vec<f64>),
    stride: usize,
) -> (Vec<f64>, usize, usize) {
    let (o, k) = (wt.0[0], wt.0[2]);
    assert_eq!(wt.0[1], c);
    let pad = (k / 2) as isize;
    let (ho, wo) = ((h + 2 * pad as usize - k) / stride + 1, (w + 2 * pad as usize - k) / stride + 1);
    let mut out = vec![0.0; o * ho * wo];
    for oc in 0..o {
        for y in 0..ho {
            for xx in 0..wo {
                let mut s = 0.0;
                for ic in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (y * stride + ky) as isize - pad;
                            let ix = (xx * stride + kx) as isize - pad;
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                s += x[(ic * h + iy as usize) * w + ix as usize]
                                    * wt.1[((oc * c + ic) * k + ky) * k + kx];
                            }
                        }
                    }
                }
                out[(oc * ho + y) * wo + xx] = s;
            }
        }
    }
    (out, ho, wo)
}

fn bn(x: &mut [f64], c: usize, p: &Params, name: &str) {
    let g = |s: &str| &p[&format!("{name}.{s}")].1;
    let plane = x.len() / c;
    for ch in 0..c {
        let scale = g("weight")[ch] / (g("running_var")[ch] + 1e-5).sqrt();
        for v in &mut x[ch * plane..(ch + 1) * plane] {
            *v = (*v - g("running_mean")[ch]) * scale + g("bias")[ch];
        }
    }
}

fn relu(x: &mut [f64]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

fn reference_forward(cfg: &ResNetConfig, p: &Params, img: &[f64], h: usize, w: usize) -> Vec<f64> {
    let (mut x, mut h, mut w) = conv(img, cfg.in_channels, h, w, &p["conv1.weight"], 1);
    bn(&mut x, cfg.widths[0], p, "bn1");
    relu(&mut x);
    for b in cfg.blocks() {
        let pre = b.prefix();
        let (mut y, ho, wo) = conv(&x, b.in_planes, h, w, &p[&format!("{pre}.conv1.weight")], b.stride);
        bn(&mut y, b.planes, p, &format!("{pre}.bn1"));
        relu(&mut y);
        let (mut y, _, _) = conv(&y, b.planes, ho, wo, &p[&format!("{pre}.conv2.weight")], 1);
        bn(&mut y, b.planes, p, &format!("{pre}.bn2"));
        let short = if b.changes_shape() {
            let (mut s, _, _) = conv(&x, b.in_planes, h, w, &p[&format!("{pre}.downsample.0.weight")], b.stride);
            bn(&mut s, b.planes, p, &format!("{pre}.downsample.1"));
            s
        } else {
            x.clone()
        };
        x = y.iter().zip(&short).map(|(a, b)| (a + b).max(0.0)).collect();
        (h, w) = (ho, wo);
    }
    let c = cfg.widths[2];
    let pooled: Vec<f64> =
        (0..c).map(|ch| x[ch * h * w..(ch + 1) * h * w].iter().sum::<f64>() / (h * w) as f64).collect();
    let (lw, lb) = (&p["fc.weight"].1, &p["fc.bias"].1);
    (0..cfg.num_classes).map(|k| lb[k] + (0..c).map(|j| lw[k * c + j] * pooled[j]).sum::<f64>()).collect()
}

#[test]
fn option_b_grayscale_import_matches_an_independent_forward() {
    let cfg = ResNetConfig {
        blocks_per_stage: 1,
        widths: [8, 16, 32],
        shortcut: Shortcut::B,
        in_channels: 1,
        num_classes: 7,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // Random parameters under torchvision-lineage names.
    let mut params: Params = HashMap::new();
    for (name, shape) in cfg.tensor_shapes() {
        let n: usize = shape.iter().product();
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let values: Vec<f64> = (0..n)
            .map(|_| {
                if name.ends_with("running_var")
                    || (shape.len() == 1 && name.ends_with(".weight") && !name.starts_with("linear"))
                {
                    rng.random_range(0.5..1.5)
                } else if shape.len() == 1 {
                    rng.random_range(-0.3..0.3)
                } else {
                    rng.random_range(-1.0..1.0) * (3.0 / fan_in as f64).sqrt()
                }
            })
            .collect();
        let torch_name = name.replace(".shortcut.", ".downsample.").replace("linear.", "fc.");
        params.insert(torch_name, (shape, values));
    }
    assert!(params.keys().any(|k| k.contains("downsample")), "the test network has projections");

    // Serialise as a DataParallel-style export: `module.` prefix, i64 `num_batches_tracked`.
    let mut bytes: Vec<(String, Vec<u8>, Vec<usize>, Dtype)> = params
        .iter()
        .map(|(n, (s, v))| {
            let raw: Vec<u8> = v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect();
            (format!("module.{n}"), raw, s.clone(), Dtype::F32)
        })
        .collect();
    for n in params.keys().filter(|n| n.ends_with("running_mean")) {
        let name = format!("module.{}", n.replace("running_mean", "num_batches_tracked"));
        bytes.push((name, 1000i64.to_le_bytes().to_vec(), vec![], Dtype::I64));
    }
    let views: Vec<(String, TensorView)> =
        bytes.iter().map(|(n, raw, s, d)| (n.clone(), TensorView::new(*d, s.clone(), raw).unwrap())).collect();
    let file = safetensors::serialize(views, None).unwrap();

    let model = import_bytes(&file, &ImportOptions::default()).unwrap();
    assert_eq!(model.meta.arch, cfg.clone().into(), "architecture detected from names and shapes");
    assert_eq!((model.meta.input.height, model.meta.input.width), (28, 28));
    let net = ResNet::new(&model, &Device::Cpu).unwrap();

    // Weights were rounded to f32 when exported: the reference uses the same rounded values.
    for (_, v) in params.values_mut() {
        v.iter_mut().for_each(|x| *x = *x as f32 as f64);
    }
    let batch = 3;
    let imgs: Vec<f32> = (0..batch * 28 * 28).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let x = Tensor::from_vec(imgs.clone(), (batch, 1, 28, 28), &Device::Cpu).unwrap();
    let got = net.forward(&x).unwrap().to_vec2::<f32>().unwrap();
    let mut max_diff = 0f64;
    for (i, row) in got.iter().enumerate() {
        let img: Vec<f64> = imgs[i * 784..(i + 1) * 784].iter().map(|&v| v as f64).collect();
        let want = reference_forward(&cfg, &params, &img, 28, 28);
        for (a, b) in row.iter().zip(&want) {
            max_diff = max_diff.max((*a as f64 - b).abs());
        }
    }
    eprintln!("option B, 1x28x28: max |runtime - reference| = {max_diff:e}");
    assert!(max_diff < 1e-4, "runtime differs from the reference by {max_diff}");
}
