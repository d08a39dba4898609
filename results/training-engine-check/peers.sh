#!/bin/bash
D=/work/shared/data/cifar10-jpeg.tar.gz
for r in 1 2; do for v in new2 02e; do
  /tmp/classmod-$v bench --peers --model r20.safetensors --data $D --out peers-$v-$r > peers-$v-$r.txt 2>&1
  echo "$v $r rc=$?"
done; done
echo PEERSDONE
