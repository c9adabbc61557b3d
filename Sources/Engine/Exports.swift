// Engine is the library's front: a program that imports Engine sees the layers below it
// (the data types, formats, tokenizer, model and kernels' Swift face); the layers below
// cannot see Engine or each other upward.
@_exported import Architecture
@_exported import ChatTemplate
@_exported import Core
@_exported import Formats
@_exported import Kernels
@_exported import Model
@_exported import Quant
@_exported import Tokenizer
