import MLX5Handler
import MigrationCore
import Testing
import VFIO
import VFIOPCIHandler
import VFIOSimulator

/// What a destination handler reports as its final data's fixed load cost (LOAD_REPORT's
/// fixed cost): the figure its tuning was given, zero by default, never negative.
@Suite struct FinalLoadCostTests {
    @Test func theTuningsReportTheFigureTheyWereGiven() {
        #expect(MLX5Tuning().expectedFinalLoadCostMicros() == 0)
        #expect(GenericVFIOPCITuning().expectedFinalLoadCostMicros() == 0)
        #expect(MLX5Tuning(finalLoadCost: .milliseconds(40)).expectedFinalLoadCostMicros() == 40_000)
        #expect(GenericVFIOPCITuning(finalLoadCost: .microseconds(1500)).expectedFinalLoadCostMicros() == 1500)
        #expect(MLX5Tuning(finalLoadCost: .milliseconds(-5)).expectedFinalLoadCostMicros() == 0)
    }

    @Test func theHandlerPassesItOn() throws {
        let device = try SimulatedVFIODevice(.mlx5(imageSize: 1 << 16, finalImageSize: 4096), clock: ManualSimulationClock())
        let handler = MLX5Module.makeHandler(device: device, tuning: MLX5Tuning(finalLoadCost: .milliseconds(25)))
        let context = RecordingContext(identity: handler.identity, ack: true)
        #expect(handler.expectedFinalLoadCostMicros(context: context) == 25_000)
    }
}
