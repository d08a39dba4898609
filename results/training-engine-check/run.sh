#!/bin/bash
set -x
S=/work/shared
D=$S/data/cifar10-jpeg.tar.gz
C=airplane,automobile,bird,cat,deer,dog,frog,horse,ship,truck
/tmp/classmod-new import $S/models/resnet20-cifar10.safetensors --out r20.safetensors --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --class-names $C > import.txt 2>&1
for v in old new; do
  /usr/bin/time -v /tmp/classmod-$v decompose --kind compact --model r20.safetensors --data $D --out c20-$v > decompose-$v.txt 2>&1
  /tmp/classmod-$v compose-eval --modules c20-$v --data $D > compose-eval-$v.txt 2>&1
done
F=/usr/share/datasets/fashion-mnist
for r in 1 2; do for v in old new; do
  /tmp/classmod-$v train --data $F --out fm-$v.safetensors --arch resnet8 --widths 8,16,32 --steps 300 --batch 32 --lr 0.05 --schedule one-cycle --seed 3 --limit 6000 --eval-limit 1000 > train-$v-$r.txt 2>&1
done; done
echo ALLDONE
