/** A one-node ONNX model C = A·B (fp32, size×size), written with tools/tiny-model's protobuf encoder. */
import { encodeModel, type OnnxModel } from '../../tools/tiny-model';

export function matmulOnnx(size: number): Uint8Array {
  const FLOAT = 1;
  const model: OnnxModel = {
    irVersion: 8,
    opsetVersion: 17,
    producerName: 'execution-node-bench',
    producerVersion: '0.1.0',
    graph: {
      name: `matmul_${size}`,
      nodes: [{ opType: 'MatMul', name: 'mm', inputs: ['A', 'B'], outputs: ['C'], attributes: [] }],
      initializers: [],
      inputs: [
        { name: 'A', elemType: FLOAT, shape: [size, size] },
        { name: 'B', elemType: FLOAT, shape: [size, size] },
      ],
      outputs: [{ name: 'C', elemType: FLOAT, shape: [size, size] }],
    },
  };
  return encodeModel(model);
}
