//! Dense f32 matrix products on plain slices: a checked, safe face over the `gemm` crate (the
//! kernel behind candle's CPU matmul), so that a product writes into a buffer the caller keeps
//! instead of a fresh tensor.

/// A read-only `rows x cols` view of a slice, row-major or (through [`MatRef::t`]) transposed.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> MatRef<'a> {
    /// The row-major `rows x cols` matrix `data`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix of {rows}x{cols} over {} values", data.len());
        MatRef { data, rows, cols, row_stride: cols as isize, col_stride: 1 }
    }

    /// Columns `cols.start..cols.end` of every row of the row-major `rows x stride` matrix
    /// `data`, as a `rows x cols.len()` view.
    pub fn columns(data: &'a [f32], rows: usize, stride: usize, cols: std::ops::Range<usize>) -> Self {
        assert!(cols.end <= stride && data.len() >= rows * stride, "columns {cols:?} of {rows}x{stride}");
        let data = &data[cols.start.min(data.len())..];
        MatRef { data, rows, cols: cols.len(), row_stride: stride as isize, col_stride: 1 }
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        MatRef { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// Whether the last element lies inside the slice (strides are never negative here).
    fn covered(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || ((self.rows - 1) as isize * self.row_stride + (self.cols - 1) as isize * self.col_stride)
                < self.data.len() as isize
    }
}

/// `dst = a b` (row-major `a.rows x b.cols`), or `dst += a b` when `accumulate`. `parallel`
/// splits the product over rayon's threads; otherwise it runs on the calling thread.
pub fn matmul(dst: &mut [f32], a: MatRef, b: MatRef, accumulate: bool, parallel: bool) {
    let n = b.cols;
    assert_eq!(dst.len(), a.rows * n, "matmul: destination of {} values for {}x{n}", dst.len(), a.rows);
    matmul_columns(dst, n, a, b, accumulate, parallel);
}

/// [`matmul`] into the first `b.cols` columns of the row-major matrix `dst` whose rows are
/// `dst_stride` apart (a block of columns of a wider matrix: pass the slice from its first column).
pub fn matmul_columns(dst: &mut [f32], dst_stride: usize, a: MatRef, b: MatRef, accumulate: bool, parallel: bool) {
    assert_eq!(a.cols, b.rows, "matmul: inner sizes {} and {}", a.cols, b.rows);
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(n <= dst_stride, "matmul: {n} columns in rows of {dst_stride}");
    assert!(m == 0 || dst.len() >= (m - 1) * dst_stride + n, "matmul: destination too short for {m}x{n}");
    assert!(a.covered() && b.covered(), "matmul: a view outside its slice");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_stride).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let parallelism =
        if parallel { gemm::Parallelism::Rayon(rayon::current_num_threads()) } else { gemm::Parallelism::None };
    // SAFETY: the views were checked to cover exactly `rows * cols` values of their slices with
    // the strides given, and `dst` holds `m * n` values, row-major (row stride n, column stride 1);
    // `dst` is borrowed mutably, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride,
            a.row_stride,
            b.data.as_ptr(),
            b.col_stride,
            b.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the textbook triple loop (the reference), for every transpose combination.
    #[test]
    fn matches_the_triple_loop_with_and_without_transposes() {
        let (m, k, n) = (5, 7, 3);
        let val = |i: usize| ((i * 37 % 11) as f32 - 5.0) / 3.0;
        let a: Vec<f32> = (0..m * k).map(val).collect();
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let b: Vec<f32> = (0..k * n).map(|i| val(i + 3)).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut want = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
            }
        }
        let views = [
            (MatRef::new(&a, m, k), MatRef::new(&b, k, n)),
            (MatRef::new(&at, k, m).t(), MatRef::new(&b, k, n)),
            (MatRef::new(&a, m, k), MatRef::new(&bt, n, k).t()),
            (MatRef::new(&at, k, m).t(), MatRef::new(&bt, n, k).t()),
        ];
        for (i, (x, y)) in views.into_iter().enumerate() {
            for parallel in [false, true] {
                let mut got = vec![1f32; m * n];
                matmul(&mut got, x, y, false, parallel);
                let d = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
                assert!(d < 1e-5, "case {i}: {d}");
                matmul(&mut got, x, y, true, parallel);
                let d = got.iter().zip(&want).map(|(g, w)| (g - 2.0 * w).abs()).fold(0f32, f32::max);
                assert!(d < 1e-5, "case {i}, accumulated: {d}");
            }
        }
        // A block of columns: b's columns 1..3 into columns 1..3 of a wider destination.
        let mut wide = vec![7f32; m * 4];
        matmul_columns(&mut wide[1..], 4, MatRef::new(&a, m, k), MatRef::columns(&b, k, n, 1..3), false, false);
        for i in 0..m {
            assert_eq!(wide[i * 4], 7.0);
            assert_eq!(wide[i * 4 + 3], 7.0);
            for j in 1..3 {
                assert!((wide[i * 4 + j] - want[i * n + j]).abs() < 1e-5);
            }
        }
    }
}
