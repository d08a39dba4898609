#!/bin/bash
# Ablations on ResNet-20 (CIFAR-100 init), 20,000 training images (100 a class), 3 epochs, 5,000 val images.
B=/tmp/ft/classmod
D=/work/shared/data/tiny-imagenet-200.tar.gz
common=(--data $D --init /tmp/ft/r20.safetensors --limit 20000 --eval-limit 5000 --epochs 3 --batch 128 --lr 0.1 --schedule one-cycle --seed 0 --json)
run() { name=$1; shift; $B train "${common[@]}" --out /tmp/ab/$name.safetensors "$@" 2>/tmp/ab/$name.log | tail -1 > /tmp/ab/$name.json; }
run t2-32 --freeze-stages 2
run t1-32 --freeze-stages 1
run t2-64 --freeze-stages 2 --input-size 64
run t0-32-aug --freeze-stages 0
