// Runtime re-exports Kernels so that clients see FloatBuffer, ThreadPool and LinearWeights.
@_exported import Kernels
